"""Rebuild a trained model from its checkpoint, safely.

Checkpoints are read with ``torch.load(weights_only=True)``: only tensors and plain containers, so a
tampered file cannot run code by unpickling. Nor through its config: the model is re-composed from
this repository's ``conf/`` with the run's recorded group choices and plain-valued overrides
(``lmguide_overrides``), each checked by :mod:`lmguide.runs.config_guard`, plus any new overrides the
caller gives; every ``_target_`` of the result must be one of ``conf/``'s. The stored resolved config
(``lmguide_config``) is kept for people to read and is never instantiated.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from lmguide.runs.errors import LmguideError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all: each goes to a temp file beside its target
    (``.<name>.tmp-<pid>``), is flushed to disk, then renamed over the old one. A ``kill -9`` or a full
    disk mid-write leaves the previous ``last.ckpt`` intact. (Lightning's own writer stages local
    files in the system temp dir and *copies* them when that is another file system, e.g. local
    ``/tmp`` and a network run dir: not atomic, and a killed write leaves the stage behind.)
    Remote paths (``s3://``...) keep Lightning's writer."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def remove_stale_temps(ckpt_dir: Path) -> list[Path]:
    """Delete the temp files of checkpoint writes a killed run left in ``ckpt_dir``; returns them."""
    stale = sorted(Path(ckpt_dir).glob(".*.ckpt.tmp-*"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class CheckpointError(LmguideError, RuntimeError):
    """A checkpoint that cannot be used: missing, not a plain lmguide checkpoint, or another model."""


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): a copy or download that did not finish?"
        )
    if not head.startswith(b"PK") and head[:1] != b"\x80":  # a torch.save zip, or a legacy pickle
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle): damaged, or another "
            "kind of file"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing {path}: it holds objects other than tensors and plain containers "
            f"(weights_only load failed: {str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "lmguide_config" not in ckpt:
        raise CheckpointError(f"{path} is not an lmguide training checkpoint (no state_dict/lmguide_config)")
    return ckpt


def checkpoint_config(
    ckpt: dict, overrides: Sequence[str] = (), output_dir: str | Path = ".", source: str | Path = "checkpoint"
) -> DictConfig:
    """The training config of ``ckpt`` (read from ``source``, named in errors) with ``overrides`` (the
    caller's own) applied on top. Refuses, naming the entry, anything the checkpoint records that is
    not a ``conf/`` choice or a plain value, and any composed ``_target_`` that ``conf/`` does not
    hold."""
    from hydra.errors import HydraException

    from lmguide.runs.config_guard import UntrustedConfig, check_targets, compose_train_config, safe_replay

    recorded = ckpt.get("lmguide_overrides")
    if not recorded:
        raise CheckpointError(
            f"{source} records no group choices and overrides (lmguide_overrides): it cannot be rebuilt "
            "from conf/, and its stored config is never instantiated. Re-train, or load its state_dict "
            "into a model you compose yourself"
        )
    try:
        replay = safe_replay(recorded)
    except UntrustedConfig as err:
        raise CheckpointError(f"refusing {source}: {err}") from None
    args = [*replay, f"paths.output_dir={output_dir}", *overrides]
    try:
        cfg = compose_train_config(args)
    except HydraException as err:
        raise CheckpointError(
            f"cannot rebuild the run of {source} from conf/: {str(err).splitlines()[0]}"
        ) from None
    try:
        check_targets(cfg)
    except UntrustedConfig as err:
        raise CheckpointError(f"refusing {source}: {err}") from None
    return cfg


def skip_initial_weights(cfg) -> None:
    """Build-from-checkpoint helper: the checkpoint holds every weight and the input normalisation, so
    the model is built without its initial weights (no hub download, no weights file or wheel read,
    which the evaluating machine may not have). Edits ``cfg``'s backbone in place."""
    from omegaconf import OmegaConf, open_dict

    for node in (cfg.get("backbone"), OmegaConf.select(cfg, "model.backbone")):
        if isinstance(node, DictConfig):
            with open_dict(node):
                if "pretrained" in node:
                    node.pretrained = False
                if "weights" in node:
                    node.weights = None


def with_normalisation(model: torch.nn.Module, state_dict: dict) -> dict:
    """``state_dict`` with the input normalisation of every :class:`TimmBackbone` in ``model`` that it
    lacks: checkpoints written before the buffers existed were trained on ImageNet-normalised input."""
    from lmguide.models.backbones import TimmBackbone
    from lmguide.models.weights import IMAGENET_MEAN, IMAGENET_STD

    out = dict(state_dict)
    for name, mod in model.named_modules():
        if isinstance(mod, TimmBackbone):
            pre = f"{name}." if name else ""
            out.setdefault(f"{pre}input_mean", torch.tensor(IMAGENET_MEAN))
            out.setdefault(f"{pre}input_std", torch.tensor(IMAGENET_STD))
    return out


def load_model(path: str | Path, overrides: Sequence[str] = (), output_dir: str | Path = "."):
    """``(model in eval mode, config)`` from a checkpoint; a model of another shape is refused by name.

    A clip (video) model comes back like any other (``model.clip_frames`` set): eval scores it on the
    split's clips, predict and visualize cut clips from a video's face track as training does
    (:mod:`lmguide.inference.clips`); export refuses it itself."""
    ckpt = read_checkpoint(path)
    cfg = checkpoint_config(ckpt, overrides, output_dir, source=path)
    skip_initial_weights(cfg)  # the checkpoint holds the weights: no hub, weights file or wheel read
    model = hydra.utils.instantiate(cfg.model)
    own, saved = model.state_dict(), with_normalisation(model, ckpt["state_dict"])
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shape_errors = [k for k, v in saved.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or shape_errors:
        raise CheckpointError(
            f"{path} does not fit the model built from its config "
            f"(backbone {cfg.model.backbone.name}): missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatch {shape_errors[:3]}; was it trained with another backbone or attention?"
        )
    bad = [k for k, v in saved.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(
            f"{path} holds non-finite weights (NaN/Inf) in {len(bad)} tensor(s), e.g. {bad[0]}: it would "
            "score every face as nan; use an earlier checkpoint of that run"
        )
    model.load_state_dict(saved)
    model.val_threshold = ckpt.get("lmguide_threshold")  # see verdict_threshold
    model.provenance = ckpt.get("lmguide_provenance")  # shown, never run: see lmguide.training.provenance
    return model.eval(), cfg


def stored_threshold(model) -> tuple[float | None, str]:
    """``(threshold, note)``: the P(fake) threshold a model from :func:`load_model` stores, as stored.
    Training stores the one calibrated on the validation split (``lmguide_threshold``: the
    balanced-accuracy optimum on the val frames of the validation that wrote the checkpoint); None
    for a checkpoint without it (written before it was stored, or after a one-class validation) or
    with one that is no probability, and the note says which."""
    stored = getattr(model, "val_threshold", None)
    value = stored.get("value") if isinstance(stored, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        step = stored.get("step")  # shown on the page: only an integer is taken from the file
        where = f" at step {step}" if isinstance(step, int) and not isinstance(step, bool) else ""
        return float(value), f"calibrated on the validation split{where} (max balanced accuracy)"
    if stored is not None:
        return None, "this checkpoint's stored threshold is not a probability in [0, 1]"
    return None, "this checkpoint stores no validation-calibrated threshold (written before it was stored)"


def verdict_threshold(model) -> tuple[float, str]:
    """``(threshold, note)`` for a fake/real verdict: :func:`stored_threshold`, or 0.5 for a checkpoint
    without one, and the note says so."""
    value, note = stored_threshold(model)
    return (value, note) if value is not None else (0.5, f"0.5: {note}")
