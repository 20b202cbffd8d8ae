"""The metadata an exported detector carries: what its input is, how to cut and normalise a face for it,
what its outputs mean, the model and its source (ONNX ``metadata_props``, TorchScript ``_extra_files``).

Every value is JSON, written by :func:`export_metadata` and read back by :func:`read_metadata`; a reader
needs neither lmguide nor PyTorch (``onnxruntime``'s ``get_modelmeta().custom_metadata_map`` holds the
same strings). The keys:

* ``input``: the tensor (name, shape, NCHW, RGB, ``image_size``, ``resample``, ``scale``, ``mean``,
  ``std``: ``(rgb_uint8 * scale - mean) / std`` of the crop resized to ``image_size``) and its channels;
* ``crop``: how predict cuts a face out of a frame (:func:`lmguide.data.faces.crop_face`) from a detector
  box, as values: a square (``square``) centred on the box, of side ``scale * max(box w, h)``,
  resampled to ``size`` px (``resample_down`` when shrinking, else ``resample_up``), ``fill`` outside;
* ``faces``: the run's ``data.faces`` (detector, min_confidence, min_face_size, which faces, ...);
* ``verdict``: the checkpoint's P(fake) ``threshold`` (:func:`lmguide.training.checkpoint.verdict_threshold`),
  ``fake_if``, its ``note``, and ``file_rule`` / ``min_fake_frames`` (predict's file verdict: any face);
* ``outputs``, ``model`` (backbone, attention, head, maps), ``source`` (checkpoint, sha256, version).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from lmguide import __version__
from lmguide.runs.errors import ExportError

INPUT_NAME = "image"
OUTPUT_NAMES = ("prob_fake", "attention")
#: the metadata keys, in both formats
METADATA_KEYS = ("input", "outputs", "crop", "faces", "verdict", "model", "source")


def export_metadata(
    cfg: DictConfig, ckpt_path: str | Path, maps_shape: tuple[int, ...], verdict: tuple[float, str]
) -> dict[str, str]:
    """The metadata written into the exported file: ``{key: JSON string}``. ``verdict``: the
    checkpoint's ``(threshold, note)`` (:func:`lmguide.training.checkpoint.verdict_threshold`)."""
    from lmguide.data.cache import sha256_file
    from lmguide.data.channels import describe_channels, run_channels
    from lmguide.data.faces import face_settings
    from lmguide.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    size = int(cfg.data.image_size)
    fs = face_settings(cfg.data.faces)
    m, h, w = (int(v) for v in maps_shape[1:])
    channels = describe_channels(run_channels(cfg))
    meta = {
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3 + len(channels.get("landmark_regions", {})), size, size],
            "channels": channels,
            "dtype": "float32",
            "layout": "NCHW",
            "color": "RGB",
            "image_size": size,
            "resample": "area",
            "resize": "face crop (face_size px) resized to image_size with cv2.INTER_AREA",
            "scale": 1 / 255,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "formula": "(rgb_uint8 * scale - mean) / std, per RGB channel",
        },
        "outputs": {
            OUTPUT_NAMES[0]: {"shape": ["batch"], "meaning": "P(fake), softmax of the margin-free logits"},
            OUTPUT_NAMES[1]: {
                "shape": ["batch", m, h, w],
                "meaning": "attention maps on the backbone feature grid (>= 0), one per map/head",
            },
        },
        "crop": {
            "box": "x0, y0, x1, y1",  # the detector box, in pixels of the frame
            "center": "box_center",
            "square": True,
            "side": "scale * max(x1 - x0, y1 - y0)",
            "scale": fs.crop_scale,
            "size": fs.face_size,
            "resample_down": "area",  # cv2.INTER_AREA when size < side
            "resample_up": "linear",  # cv2.INTER_LINEAR otherwise
            "fill": [0, 0, 0],  # outside the frame
            "color": "RGB",
            "dtype": "uint8",
            "mapping": "cv2.warpAffine: dst = k * (src - center) + size / 2, k = size / side",
            "function": "lmguide.data.faces.crop_face",
        },
        "faces": {
            **asdict(fs),
            "crop_scale": fs.crop_scale,
            "detection": "MediaPipe face detection (detector: full, short, both; none: the input is "
            "already a crop), detections under min_confidence dropped, faces under min_face_size px not "
            "scored; image_faces / video_faces: which faces a frame keeps",
        },
        "verdict": {
            "threshold": float(verdict[0]),
            "fake_if": "prob_fake >= threshold",
            "note": verdict[1],
            # a file's verdict (lmguide.inference.verdict, predict's default rule): fake when any face is
            # fake; a video when this many sampled frames in a row are; its P(fake) is the score compared
            "file_rule": "any",
            "min_fake_frames": 2,
        },
        "model": {
            "backbone": str(cfg.model.backbone.name),
            "attention": str(cfg.model.attention._target_).rsplit(".", 1)[-1],
            "head": str(cfg.model.head._target_).rsplit(".", 1)[-1],
            "num_maps": m,
            "feature_grid": [h, w],
        },
        "source": {
            "checkpoint": Path(ckpt_path).name,
            "checkpoint_sha256": sha256_file(ckpt_path),
            "lmguide_version": __version__,
        },
    }
    return {k: json.dumps(v) for k, v in meta.items()}


def read_metadata(path: str | Path) -> dict:
    """The lmguide metadata of an exported file (``.onnx`` or TorchScript), values parsed from JSON."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    else:
        import torch

        files = dict.fromkeys(METADATA_KEYS, "")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        props = files
    missing = [k for k in METADATA_KEYS if not props.get(k)]
    if len(missing) == len(METADATA_KEYS):
        raise ExportError(f"{path} holds no lmguide metadata: was it written by lmguide.export?")
    if missing:
        raise ExportError(
            f"{path} lacks the lmguide metadata {missing}: written by an older lmguide.export? Export the "
            "checkpoint again"
        )
    return {k: json.loads(props[k]) for k in METADATA_KEYS}
