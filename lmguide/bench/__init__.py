"""Benchmarks: ``python -m lmguide.bench`` (see ``__main__``)."""
