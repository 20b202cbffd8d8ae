"""``trainer.compile``: the LightningModule wrapped in :func:`torch.compile`, with a named backend.

``true`` means inductor (generated kernels: the fast path on a GPU). A backend name picks another of
torch's own: ``aot_eager`` traces forward and backward exactly as inductor does (TorchDynamo, then
AOTAutograd) but runs the traced graphs without generating code, so a graph break, a failing guard or
an op the tracer cannot handle shows up in seconds instead of after minutes of C++ compilation on a CPU.
The name comes from a fixed list: a config (a checkpoint's too) never names code to run.
"""

from __future__ import annotations

import logging

from lmguide.errors import ConfigError

log = logging.getLogger(__name__)

#: trainer.compile values beside true/false: torch's built-in backends
BACKENDS = ("inductor", "aot_eager", "eager")


def compile_backend(value) -> str | None:
    """The backend ``trainer.compile`` asks for (None: no compile); a clear error for anything else."""
    if value is None or value is False:
        return None
    if value is True:
        return "inductor"
    if isinstance(value, str) and value in BACKENDS:
        return value
    raise ConfigError(
        f"trainer.compile={value!r} is not a choice: use false, true (inductor) or a backend, "
        f"one of {', '.join(BACKENDS)}"
    )


def compile_model(model, value):
    """``model`` wrapped in torch.compile with the backend ``value`` names, or ``model`` itself."""
    backend = compile_backend(value)
    if backend is None:
        return model
    import torch

    torch._dynamo.reset()  # counters and caches from an earlier run in this process do not carry over
    log.info("trainer.compile: torch.compile(backend=%s)", backend)
    return torch.compile(model, backend=backend)


def compile_stats() -> dict[str, int]:
    """What TorchDynamo did so far in this process: graphs compiled, frames captured, graph breaks."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "frames": int(counters["stats"]["calls_captured"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }
