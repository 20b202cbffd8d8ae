"""Explain a detector trained elsewhere: a timm classifier's weights file, not an lmguide checkpoint.

``python -m lmguide.visualize ckpt_path=<file> input=<image> backbone=<choice>`` builds the timm model of
that backbone choice (``backbone.name=<timm name>`` for any other timm model) with as many outputs
as the file's classifier has, loads the file's tensors (a bare state dict, or one under ``params``,
``state_dict`` or ``model``; read with ``weights_only=True``), reports what matched and refuses a file
that fills less than half of the model. P(fake) is the softmax of output 1 (two outputs) or the sigmoid
of the only one; Grad-CAM explains the last feature stage. The face is cropped as lmguide's default data
config does, at the model's input size and with its normalisation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmguide.runs.errors import LmguideError

log = logging.getLogger(__name__)


class ForeignCheckpointError(LmguideError, ValueError):
    """A weights file that does not fit the named timm model."""


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    from lmguide.models.weights import WeightsError, read_weights

    try:
        sd, kind, _ = read_weights(path)
    except WeightsError as err:
        raise ForeignCheckpointError(str(err).replace("backbone.weights: ", "ckpt_path: ")) from None
    return sd, kind


def load_foreign(path: str | Path, name: str) -> tuple[nn.Module, str]:
    """The timm model ``name`` holding the file's tensors, in eval mode, and the match report."""
    import timm

    from lmguide.models.weights import MIN_MATCHED, match_weights

    path = Path(path).expanduser()
    if not path.is_file():
        raise ForeignCheckpointError(f"ckpt_path: {path} does not exist")
    if name not in timm.list_models():
        raise ForeignCheckpointError(f"backbone.name: no timm model {name!r}")
    sd, kind = _tensors(path)
    probe = timm.create_model(name, pretrained=False)
    head = probe.default_cfg.get("classifier", "")
    head = head[0] if isinstance(head, list | tuple) else head
    outs = sorted({v.shape[0] for k, v in sd.items() if k.endswith(f"{head}.weight") and v.dim() >= 2})
    if len(outs) > 1 or outs and outs[0] not in (1, 2):
        raise ForeignCheckpointError(
            f"{path}: its classifier '{head}.weight' of {name} has {outs} output(s); a detector needs 1 "
            "(sigmoid) or 2 (softmax: real, fake)"
        )
    model = timm.create_model(name, pretrained=False, num_classes=outs[0] if outs else 2)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    match = match_weights(sd, shapes, shapes)
    report = match.summary(f"{path} ({kind}) onto {name}").replace("backbone tensors", "tensors")
    if match.matched < MIN_MATCHED * match.total or any(k.startswith(f"{head}.") for k in match.missing):
        raise ForeignCheckpointError(f"{path} does not fit timm's {name}: {report}")
    model.load_state_dict(match.tensors, strict=False)
    return model.eval(), report


def prob_fake(logits: torch.Tensor) -> torch.Tensor:
    """P(fake) of a detector's outputs: the softmax of output 1, or the sigmoid of a single output."""
    return logits.softmax(-1)[:, 1] if logits.shape[-1] == 2 else logits[:, 0].sigmoid()


def explain_foreign(
    model: nn.Module,
    rgb: np.ndarray,
    size: int,
    alpha: float,
    target_class: int,
    name: str,
    norm=None,
    warnings: list[str] | None = None,
):
    """(P(fake), {stem: RGB tile}, face) for the largest face of ``rgb``: crop, Grad-CAM (with its
    colour bar) and panel. ``norm``: the (mean, std) the weights expect, else timm's for the model. A
    flat Grad-CAM has its warning written on it and logged, and appended to ``warnings`` when given."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputTarget

    from lmguide.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from lmguide.runs.config_guard import compose_train_config
    from lmguide.viz.explain import prepare_face
    from lmguide.viz.gradcam import CLASS_NAMES, flat_cam_reason
    from lmguide.viz.heat import Heat, heat_tile, warnings_of
    from lmguide.viz.overlays import heat_map, heat_overlay
    from lmguide.viz.panels import resize_rgb, side_by_side

    side = int(model.default_cfg.get("input_size", (3, 224, 224))[-1])
    run_cfg = compose_train_config([f"data.image_size={side}"])
    face = prepare_face(rgb, run_cfg, "largest", name=name)
    mean, std = norm or (
        model.default_cfg.get("mean", IMAGENET_MEAN),
        model.default_cfg.get("std", IMAGENET_STD),
    )
    mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(std, dtype=torch.float32)[:, None, None]
    unit = face.image * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    x = ((unit - mean) / std).float()[None]
    with torch.no_grad():
        p = float(prob_fake(model(x))[0])
    layer = dict(model.named_modules())[model.feature_info[-1]["module"]]
    single = model.get_classifier().out_features == 1
    target = BinaryClassifierOutputTarget(target_class) if single else ClassifierOutputTarget(target_class)
    with torch.enable_grad(), GradCAM(model, [layer]) as cam:
        heat = np.nan_to_num(cam(input_tensor=x.clone(), targets=[target])[0].astype(np.float32))
        kept = cam.activations_and_grads  # read before the context releases them
        warning = flat_cam_reason(heat, kept.gradients, kept.activations, CLASS_NAMES[target_class])
    crop = resize_rgb(face.crop, size)
    label = f"Grad-CAM ({CLASS_NAMES[target_class]})"
    overlay = Heat(heat_overlay(crop, heat, alpha), heat, label, warning, label)
    for w in warnings_of([overlay]):
        log.warning("%s", w)
        if warnings is not None:
            warnings.append(w)
    images = {
        "face": crop,
        "gradcam": heat_tile(overlay),
        "gradcam_heatmap": heat_tile(Heat(heat_map(heat, size, size), heat, label, warning)),
    }
    images["panel"] = side_by_side(
        [crop, overlay], ["face crop", label], f"P(fake) = {p:.3f}  ->  {CLASS_NAMES[int(p >= 0.5)]}"
    )
    return p, images, face
