"""The metadata an exported detector carries: what its input is, how to cut and normalise a face for it,
what its outputs mean, the model and its source (ONNX ``metadata_props``, TorchScript ``_extra_files``).

Every value is JSON, written by :func:`export_metadata` and read back by :func:`read_metadata`; a reader
needs neither lmguide nor PyTorch (``onnxruntime``'s ``get_modelmeta().custom_metadata_map`` holds the
same strings).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from lmguide import __version__
from lmguide.errors import ExportError

INPUT_NAME = "image"
OUTPUT_NAMES = ("prob_fake", "attention")
#: the metadata keys, in both formats
METADATA_KEYS = ("input", "outputs", "faces", "model", "source")


def export_metadata(cfg: DictConfig, ckpt_path: str | Path, maps_shape: tuple[int, ...]) -> dict[str, str]:
    """The metadata written into the exported file: ``{key: JSON string}``."""
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
        "faces": {
            **asdict(fs),
            "crop_scale": fs.crop_scale,
            "detector": "mediapipe face_detection (model_selection, min_confidence)",
            "crop": fs.crop,
            "crop_rule": "square of side crop_scale * max(box w, h) centred on the detector box, "
            "outside the frame filled black, resized to face_size (lmguide.data.faces.crop_face)",
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
    if missing:
        raise ExportError(f"{path} holds no lmguide metadata {missing}: was it written by lmguide.export?")
    return {k: json.loads(props[k]) for k in METADATA_KEYS}
