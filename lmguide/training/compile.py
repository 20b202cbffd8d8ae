"""``trainer.compile``: the network compiled with :func:`torch.compile`, with a named backend and mode.

The LightningModule's network parts (backbone, attention, temporal model, head) are compiled in place,
each on its own; the training step around them (loss terms, metrics, logging) stays eager, so logging
causes no graph break and checkpoints keep their keys. A module without those parts is wrapped whole.

``true`` means inductor (generated kernels: the fast path on a GPU). A backend name picks another of
torch's own: ``aot_eager`` traces forward and backward exactly as inductor does (TorchDynamo, then
AOTAutograd) but runs the traced graphs without generating code, so a graph break, a failing guard or
an op the tracer cannot handle shows up in seconds instead of after minutes of C++ compilation on a CPU.
The name comes from a fixed list: a config (a checkpoint's too) never names code to run.
"""

from __future__ import annotations

import logging

from lmguide.runs.errors import ConfigError

log = logging.getLogger(__name__)

#: trainer.compile values beside true/false: torch's built-in backends
BACKENDS = ("inductor", "aot_eager", "eager")
#: trainer.compile_mode values (inductor's): null is torch's default
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: the parts of a LightningModule that are compiled, each on its own
PARTS = ("backbone", "attention", "temporal", "head")


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


def compile_mode(mode, backend: str | None) -> str | None:
    """``trainer.compile_mode`` checked against the list (a mode is inductor's alone)."""
    if mode is None:
        return None
    if not isinstance(mode, str) or mode not in MODES:
        raise ConfigError(
            f"trainer.compile_mode={mode!r} is not a choice: use null or one of {', '.join(MODES)}"
        )
    if backend != "inductor":
        raise ConfigError(
            f"trainer.compile_mode={mode} is inductor's: set trainer.compile=true (inductor) or "
            "trainer.compile_mode=null"
        )
    return mode


def compile_model(model, value, mode: str | None = None):
    """``model`` with its network parts (:data:`PARTS`) compiled in place with the backend ``value``
    names and ``mode``, and returned; a module without them wrapped whole; ``model`` as it is when
    ``value`` asks for no compile."""
    backend = compile_backend(value)
    mode = compile_mode(mode, backend)
    if backend is None:
        return model
    import torch

    torch._dynamo.reset()  # counters and caches from an earlier run in this process do not carry over
    parts = [n for n in PARTS if isinstance(getattr(model, n, None), torch.nn.Module)]
    log.info(
        "trainer.compile: torch.compile(backend=%s, mode=%s) of %s",
        backend,
        mode,
        ", ".join(parts) or "the model",
    )
    if not parts:
        return torch.compile(model, backend=backend, mode=mode)
    for name in parts:
        getattr(model, name).compile(backend=backend, mode=mode)
    return model


def compile_stats() -> dict[str, int]:
    """What TorchDynamo did so far in this process: graphs compiled, frames captured, graph breaks."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "frames": int(counters["stats"]["calls_captured"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }
