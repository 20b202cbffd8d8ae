"""What every command does around its work: one readable line for an ordinary mistake.

An :class:`~lmguide.runs.errors.LmguideError` (a missing file, a bad value, a refused checkpoint) is printed
as ``error: <what, where, how to fix>`` on stderr with exit code 1. ``HYDRA_FULL_ERROR=1`` (or
``LMGUIDE_DEBUG=1``) keeps the full traceback instead; jobs of a multirun keep Hydra's own reporting.
"""

from __future__ import annotations

import functools
import os
import sys

from lmguide.runs.errors import LmguideError

# Hydra's command-line flags that take the next argument as their value
_VALUE_FLAGS = {
    *("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"),
    *("--cfg", "-c", "--package", "-p", "--info", "-i"),
}


#: config keys that were renamed (or replaced) before 0.1.0: old key -> what to write instead. An old key
#: on the command line or in a checkpoint's recorded overrides is refused with the new one named.
RENAMED = {
    "every_k": "frames_every (predict: every k-th video frame)",
    "loss.w_aux": "loss.w_crop (the weight of the attention-crop view's CE)",
    "loss.w_aug": "loss.w_drop (the weight of the attention-drop view's CE)",
    "data.faces.model_selection": "data.faces.detector (full or short)",
    "workers": "data.prepare_workers (prepare's processes, the same key as training's prepare_data)",
}
#: renamed keys whose value carries over as it is: refused on the command line like RENAMED's, but a
#: checkpoint that recorded the old key is rebuilt with the new one (:func:`moved`)
MOVED = {
    "data.source.val_fraction": "data.source.split_fractions.val",
    "data.source.test_fraction": "data.source.split_fractions.test",
    "data.landmark_apply_to": "loss.landmark.apply_to",  # the data follows the loss: one key
}
RENAMED |= {old: f"{new} (as every layout names it)" for old, new in MOVED.items()}
RENAMED["data.landmark_apply_to"] = "loss.landmark.apply_to (the batches carry what the loss needs)"
#: a switch folded into the key it switched: its recorded values, as the overrides that mean the same
SWITCHED = {"data.self_blend": {"false": "data.fakes=null", "true": "data/fakes=self_blend"}}
RENAMED["data.self_blend"] = "data.fakes=null to turn the self-blended fakes off, data/fakes=self_blend on"


def moved(text: str) -> str:
    """A recorded override (``key=value``, ``+key=value``, ``~key``) with a :data:`MOVED` key renamed,
    or a :data:`SWITCHED` one replaced by the override it stands for."""
    key, sep, value = text.partition("=")
    bare = key.lstrip("+~")
    if bare in SWITCHED and value.strip().lower() in SWITCHED[bare]:
        return SWITCHED[bare][value.strip().lower()]
    return f"{key[: len(key) - len(bare)]}{MOVED[bare]}{sep}{value}" if bare in MOVED else text


def check_renamed(overrides) -> None:
    """Refuse overrides (``key=value``, ``+key=value``, ``~key``) that set a renamed key."""
    from lmguide.runs.errors import ConfigError

    for text in overrides:
        key = str(text).split("=", 1)[0].lstrip("+~")
        if key in RENAMED:
            raise ConfigError(f"{key} was renamed: use {RENAMED[key]}")


def debug_requested() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HYDRA_FULL_ERROR", "LMGUIDE_DEBUG"))


def fail(message: str) -> None:
    """Print ``error: message`` on stderr and exit with code 1."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def friendly_errors(task):
    """Decorate a ``@hydra.main`` task function (put it under ``@hydra.main``)."""

    @functools.wraps(task)
    def run(cfg):
        from hydra.errors import InstantiationException

        try:
            return task(cfg)
        except (LmguideError, InstantiationException) as err:
            if debug_requested() or _in_multirun():
                raise
            cause = err.__cause__ if isinstance(err, InstantiationException) else err
            if not isinstance(cause, LmguideError | ValueError):
                raise  # not a config value the user can fix: keep the traceback
            fail(str(cause))

    return run


def check_argv(argv: list[str] | None = None) -> None:
    """Catch a path with spaces left unquoted before Hydra's parser reports it as a bare lexer error:
    ``input=/data/my face.jpg`` arrives as two arguments, and the second has no ``=``."""
    args = sys.argv[1:] if argv is None else argv
    try:
        check_renamed(a for a in args if not a.startswith("-"))
    except LmguideError as err:
        fail(str(err))
    for i, arg in enumerate(args):
        if arg.startswith("-") or "=" in arg or (i and args[i - 1] in _VALUE_FLAGS):
            continue
        if i and "=" in args[i - 1]:
            key, value = args[i - 1].split("=", 1)
            fail(
                f"argument {arg!r} is not key=value: if it belongs to {key}, quote the value that holds a "
                f"space, e.g. \"{key}='{value} {arg}'\""
            )
        fail(f"argument {arg!r} is not key=value (overrides look like key=value, e.g. seed=1)")


def stop_idle_pool_workers() -> None:
    """Stop the worker processes joblib's loky pool keeps for 300 s after a ``launcher=joblib`` sweep.
    They inherit the command's stdout and stderr: piped (``| tee``, CI, a test) the command would look
    busy for five more minutes after its last job ended."""
    if "joblib" not in sys.modules:
        return
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)  # the pool, when one was started
    if executor is not None:
        executor.shutdown(wait=True)


def check_new_output(path, key: str, overwrite: bool = False) -> None:
    """Refuse an output path that is a symbolic link (writing would change the file it points to), and
    an existing file unless ``overwrite`` (results of an earlier run are never replaced silently)."""
    from pathlib import Path

    from lmguide.runs.errors import ConfigError

    path = Path(path).expanduser()
    if path.is_symlink():
        raise ConfigError(
            f"{key}={path} is a symbolic link: lmguide does not write through links; give a file path"
        )
    if path.exists() and not path.is_dir() and not overwrite:
        raise ConfigError(f"{key}={path} exists: give overwrite=true to replace it, or another {key}=")


def check_writable(path, key: str, folder: bool = False, example: str = "predictions.csv") -> None:
    """Refuse, before any work, an output that could not be written: ``path`` (a file, or a folder when
    ``folder``) must be creatable and writable. Its folder is created; a probe file is written and
    removed (file modes alone do not tell: root ignores them, read-only mounts do not). ``example``: the
    file name suggested when ``path`` is a folder."""
    import tempfile
    from pathlib import Path

    from lmguide.runs.errors import ConfigError

    path = Path(path).expanduser()
    if not folder and path.is_dir():
        raise ConfigError(f"{key}={path} is a folder: give a file name, e.g. {key}={path / example}")
    where = path if folder else path.parent
    existing = next((p for p in (where, *where.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(
            f"{key}={path} cannot be written: {existing} is a file, not a folder; give {key}= a path "
            "inside a folder"
        )
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ConfigError(
            f"{key}={path} cannot be written ({err.strerror or err}): choose a writable location"
        ) from None


def device_choice(device):
    """The ``device=`` of a scoring command (predict, eval, crosseval) as a ``torch.device``: ``auto``
    (or null) is the first CUDA GPU when there is one, else the CPU; anything else that is not a CPU or a
    CUDA device here is a one-line ConfigError naming the value."""
    import torch

    from lmguide.runs.errors import ConfigError

    name = "cuda" if device in (None, "auto") and torch.cuda.is_available() else str(device or "cpu")
    name = "cpu" if name == "auto" else name
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={device!r} is not a device: use auto, cpu, cuda or cuda:<index>") from None
    if dev.type == "cuda" and not (
        torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    ):
        gone = "is not available here (no CUDA GPU, or no such CUDA device)"
        raise ConfigError(f"device={device} {gone}: use device=cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={device!r} is not a choice: use auto, cpu, cuda or cuda:<index>")
    return dev
