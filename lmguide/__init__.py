"""lmguide: face-forgery detectors whose attention is guided by facial landmarks.

Importing the package has no side effects; the entry points import :mod:`lmguide.runs.runtime`.
"""

__version__ = "0.1.0"
