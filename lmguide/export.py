"""Export a trained detector: ``python -m lmguide.export ckpt_path=... format=onnx|torchscript [output=...]``.

The exported graph is the single-frame inference path of the model (backbone -> attention -> head):

* input ``image``: float32 (B, 3, S, S), RGB, NCHW, *normalised as in training* (the eval transform:
  the face crop resized to S = ``data.image_size`` with ``cv2.INTER_AREA``, scaled to [0, 1], minus
  ``mean``, divided by ``std``). Resizing is outside the graph anyway (it needs the crop), so the graph
  takes the exact tensor the PyTorch module takes; ``mean``/``std`` are in the metadata. B is dynamic.
  A ``model.landmark_channels`` model takes (B, 3 + R, S, S): after RGB, one landmark region mask per
  region in [0, 1], drawn from FaceMesh landmarks of the crop; the metadata's ``input.channels`` says
  how (regions, mask spec, drawing rule), so a caller can draw them from its own FaceMesh pass.
* outputs ``prob_fake`` (B,): the softmax P(fake) of the margin-free logits, as ``lmguide.predict``
  reads it; ``attention`` (B, M, h, w): the attention maps (M maps on the h x w feature grid).

Metadata (ONNX ``metadata_props``, TorchScript ``_extra_files``; the same keys, JSON values; read
back with :func:`read_metadata`; the keys in :mod:`lmguide.inference.export_meta`): the input contract, the
face crop rule, the run's face settings, the verdict threshold, the outputs, the model and its source.

The checkpoint is read with :func:`lmguide.training.checkpoint.load_model` (weights only, never unpickled).
Each export is checked before it is kept: the written file, run at another batch size than the one it
was traced at, must give the PyTorch module's P(fake) within 1e-4 and maps within 1e-3.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lmguide.inference.export_meta import read_metadata as read_metadata  # re-exported: the documented reader
from lmguide.inference.graph import export_model
from lmguide.runs.cli import check_argv, friendly_errors
from lmguide.runs.runtime import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
@friendly_errors
def main(cfg: DictConfig) -> dict:
    from rich.console import Console

    console = Console()
    path, report = export_model(
        cfg.ckpt_path,
        str(cfg.format),
        cfg.get("output"),
        out_dir=cfg.paths.output_dir,
        overrides=list(cfg.get("overrides") or []),
        opset=int(cfg.opset),
        check=bool(cfg.check),
        overwrite=bool(cfg.get("overwrite", False)),
    )
    meta = report["metadata"]
    line = (
        f"exported {cfg.ckpt_path} -> {path} ({cfg.format}, {path.stat().st_size / 2**20:.1f} MiB): "
        f"{meta['model']['backbone']} + {meta['model']['attention']}, input (batch, "
        f"{meta['input']['shape'][1]}, {meta['input']['image_size']}, {meta['input']['image_size']}) "
        "normalised with mean/std"
    )
    console.print(line, soft_wrap=True, highlight=False)
    verdict = meta["verdict"]
    console.print(
        f"  verdict threshold {verdict['threshold']:.4f} in its metadata: {verdict['note']}",
        soft_wrap=True,
        highlight=False,
    )
    if "check" in report:
        c = report["check"]
        console.print(
            f"  check at batch {c['batch']}: max |P(fake) diff| {c['prob_fake']:.2g}, "
            f"max |attention diff| {c['attention']:.2g}",
            soft_wrap=True,
            highlight=False,
        )
    if cfg.format == "onnx":
        console.print(
            f"  score a face crop with onnxruntime alone: python -m lmguide.export_example {path} face.png "
            "(lmguide/export_example.py; --photo photo.jpg cuts a photo's faces as predict does)",
            soft_wrap=True,
            highlight=False,
        )
    return report


if __name__ == "__main__":
    check_argv()
    main()
