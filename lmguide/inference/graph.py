"""The exported inference graph and its files: :class:`InferenceGraph` (backbone -> attention -> head,
P(fake) and the attention maps out), ONNX and TorchScript writers with the metadata of
:mod:`lmguide.inference.export_meta`, the parity check that keeps a file only when it scores as the
PyTorch module does, and the readers (:func:`load_exported`, :func:`run_exported`). The contract is
written in ``python -m lmguide.export``'s docstring; :func:`export_model` is that command's work.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmguide.inference.export_meta import INPUT_NAME, OUTPUT_NAMES, export_metadata
from lmguide.inference.export_meta import read_metadata as read_metadata  # re-exported: the documented reader
from lmguide.runs.cli import check_new_output, check_writable
from lmguide.runs.errors import ExportError

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
#: the export check: largest |difference| allowed between the exported file and the PyTorch module
PROB_TOL, MAPS_TOL = 1e-4, 1e-3


class InferenceGraph(nn.Module):
    """The frame path of :class:`~lmguide.models.module.LandmarkGuidedDetector` as a plain module:
    image (B, C, S, S) -> (P(fake) (B,), attention maps (B, M, h, w)); C = 3, or 3 + R region masks.

    Holds only the backbone, attention and head (not the losses, centers or metrics of the training
    module), and computes what ``LandmarkGuidedDetector.forward`` computes for frames without labels;
    the export check compares the two on every export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.attention, self.head = model.backbone, model.attention, model.head
        self.channels_last = bool(model.channels_last)
        self.in_channels = int(getattr(model, "in_channels", 3))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        fmap = self.backbone(image)  # (B, C, h, w), or (fine, deep) for a two-level backbone
        feats, maps = self.attention(fmap)  # (B, D), (B, M, h, w)
        logits = self.head(feats)  # (B, 2), margin-free (no labels)
        return logits.float().softmax(-1)[:, 1], maps.float()  # (B,), (B, M, h, w)


# -- runtimes ----------------------------------------------------------------------------------------


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(
            "format=onnx needs onnx and onnxruntime: pip install 'lmguide[export]' (make install has them)"
        ) from None
    return onnxruntime


def onnx_session(path: str | Path, threads: int | None = None, spinning: bool = True):
    """An onnxruntime CPU session for an exported file. ``spinning=False``: idle worker threads sleep
    instead of busy-waiting for the next run (fair to other work timed right after it)."""
    ort = _onnxruntime()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_exported(runner, image: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(prob_fake, attention)`` as numpy from an onnxruntime session or a TorchScript module."""
    if isinstance(runner, torch.jit.ScriptModule):
        with torch.inference_mode():
            prob, maps = runner(torch.as_tensor(image))
        return prob.numpy(), maps.numpy()
    prob, maps = runner.run(list(OUTPUT_NAMES), {INPUT_NAME: np.asarray(image, dtype=np.float32)})
    return prob, maps


def load_exported(path: str | Path):
    """An onnxruntime session (``.onnx``) or a TorchScript module (anything else) for ``path``."""
    if Path(path).suffix == ".onnx":
        return onnx_session(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript (still supported)
        return torch.jit.load(str(path), map_location="cpu").eval()


# -- export ------------------------------------------------------------------------------------------


def _write_onnx(
    graph: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str], opset: int
) -> None:
    import onnx

    _onnxruntime()
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        # the TorchScript-based exporter: needs only the onnx package (the dynamo one needs onnxscript)
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: batch, OUTPUT_NAMES[0]: batch, OUTPUT_NAMES[1]: batch},
            opset_version=opset,
        )
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = "lmguide face-forgery detector: image -> prob_fake, attention (see metadata_props)"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _write_torchscript(graph: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files=meta)  # FutureWarning: TorchScript is deprecated


def _check_parity(path: Path, graph: nn.Module, image: torch.Tensor) -> dict[str, float]:
    """Max |difference| of the written file against ``graph`` on ``image``; ExportError beyond tolerance."""
    with torch.inference_mode():
        prob, maps = (t.numpy() for t in graph(image))
    got_prob, got_maps = run_exported(load_exported(path), image.numpy())
    if got_maps.shape != maps.shape:
        raise ExportError(
            f"{path.name}: the exported attention has shape {got_maps.shape} at batch {image.shape[0]}, "
            f"the model gives {maps.shape}: the batch size did not stay dynamic"
        )
    diff = {
        "prob_fake": float(np.abs(got_prob - prob).max()),
        "attention": float(np.abs(got_maps - maps).max()),
    }
    if diff["prob_fake"] > PROB_TOL or diff["attention"] > MAPS_TOL:
        raise ExportError(
            f"{path.name} disagrees with the PyTorch module at batch {image.shape[0]}: P(fake) off by "
            f"{diff['prob_fake']:.2g} (tolerance {PROB_TOL}), attention by {diff['attention']:.2g} "
            f"(tolerance {MAPS_TOL}); it was not kept"
        )
    return diff


def refuse_clip_model(model, cfg, source) -> None:
    """Export and its benchmark need the single face-crop graph, which a clip (video) model lacks."""
    if getattr(model, "clip_frames", None):
        raise ExportError(
            f"cannot export {source}: it is a video (clip) model (backbone {cfg.model.backbone.name}, an "
            f"LSTM over clips of {model.clip_frames} frames of one tracked face). The export is the single "
            "face-crop graph (image in, P(fake) and attention out), which a clip model does not have; "
            "export a frame model (any other backbone)"
        )


def _unwritable(path: Path, err: OSError) -> str:
    return f"output={path} could not be written ({err.strerror or err}): choose a writable location"


def export_model(
    ckpt_path: str | Path,
    fmt: str = "onnx",
    output: str | Path | None = None,
    out_dir: str | Path = ".",
    overrides: list[str] | tuple[str, ...] = (),
    opset: int = 17,
    check: bool = True,
    overwrite: bool = False,
) -> tuple[Path, dict]:
    """Export ``ckpt_path`` to ``output`` (default ``out_dir/model.onnx`` or ``model.pt``).

    Returns ``(path, report)``; the report holds the metadata and, with ``check``, the parity of the
    written file against the PyTorch module at batch 2 (traced at batch 1). Raises :class:`ExportError`
    for what cannot be exported, naming why; nothing is left behind then. An ``output`` that could not
    be written, is a symbolic link, or exists (unless ``overwrite``) is refused as a
    :class:`~lmguide.runs.errors.ConfigError` before the checkpoint is read."""
    from lmguide.training.checkpoint import load_model, verdict_threshold

    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(output).expanduser() if output else Path(out_dir) / f"model{FORMATS[fmt]}"
    if (path.suffix == ".onnx") != (fmt == "onnx"):
        raise ExportError(
            f"output {path}: an ONNX file ends in .onnx and a TorchScript one does not "
            f"(format={fmt}); e.g. output=model{FORMATS[fmt]}"
        )
    # before the minutes of loading and tracing, as predict does: an earlier file is replaced only when
    # asked, a link never written through, a path under a file or in a read-only folder refused
    check_new_output(path, "output", overwrite)
    check_writable(path, "output", example=f"model{FORMATS[fmt]}")
    if fmt == "onnx":
        _onnxruntime()  # before the minutes of loading and tracing
    model, cfg = load_model(ckpt_path, list(overrides), output_dir=out_dir)
    refuse_clip_model(model, cfg, ckpt_path)
    backbone = str(cfg.model.backbone.name)
    attention = str(cfg.model.attention._target_).rsplit(".", 1)[-1]
    graph = InferenceGraph(model).eval()
    size = int(cfg.data.image_size)
    gen = torch.Generator().manual_seed(0)
    c = graph.in_channels  # 3, or 3 + R with landmark channels
    example = torch.randn(1, c, size, size, generator=gen)
    with torch.inference_mode():
        _, maps = graph(example)
    meta = export_metadata(cfg, ckpt_path, tuple(maps.shape), verdict_threshold(model))
    # written to a new file beside the target (same suffix) and renamed over it once checked: a failed
    # export leaves neither a half-written file nor a broken one, and an earlier file at `output` stays
    # as it was. The temp file is created here (O_EXCL: never a file or link already there) with the
    # mode of any new file, and the rename replaces a link at `output` rather than writing through it.
    tmp = path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:
        raise ExportError(_unwritable(path, err)) from None
    try:
        with torch.no_grad():
            if fmt == "onnx":
                _write_onnx(graph, example, tmp, meta, opset)
            else:
                _write_torchscript(graph, example, tmp, meta)
        report = {"format": fmt, "path": str(path), "metadata": {k: json.loads(v) for k, v in meta.items()}}
        if check:
            report["check"] = {
                "batch": 2,
                **_check_parity(tmp, graph, torch.randn(2, c, size, size, generator=gen)),
            }
        os.replace(tmp, path)
    except ExportError as err:
        raise ExportError(str(err).replace(tmp.name, path.name)) from None
    except OSError as err:  # the disk filled up, the folder went read-only: the output, not the model
        raise ExportError(_unwritable(path, err)) from None
    except Exception as err:  # a tracer / exporter / runtime failure: one line naming the combination
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ExportError(
            f"cannot export backbone {backbone} + attention {attention} to {fmt}: "
            f"{type(err).__name__}: {first}"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path, report
