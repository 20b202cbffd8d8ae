"""Grad-CAM (Selvaraju et al., ICCV 2017; pytorch-grad-cam) on a backbone stage: by default the one the
attention module works on, or any earlier one (:func:`lmguide.viz.stages.stage_target`), for CNN,
Swin and ViT backbones.

A Grad-CAM can come out flat (one value everywhere): :func:`flat_cam_reason` reads why from the stage's
gradients and activations, so the picture and the caller can say so instead of showing one colour."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lmguide.viz.heat import is_flat
from lmguide.viz.stages import stage_target

CLASS_NAMES = ("real", "fake")
#: the largest |gradient| below which a flat Grad-CAM is put down to vanishing gradients (pytorch-grad-cam
#: divides the map by its maximum + 1e-7, so a map this small is scaled to nearly 0 everywhere)
TINY_GRADIENT = 1e-6


class LogitsOnly(nn.Module):
    """``model(x).logits``: the plain classifier output Grad-CAM expects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def flat_cam_reason(cam: np.ndarray, gradients, activations, class_name: str = "fake") -> str:
    """Why the Grad-CAM ``cam`` is flat ("" when it is not), from the target stage's ``gradients`` and
    ``activations`` (lists of (B, C, h, w) tensors, as pytorch-grad-cam keeps them; the first item's
    first image is read)."""
    if not is_flat(cam):
        return ""
    score = f"the {class_name} score"
    if not gradients or float(gradients[0].abs().max()) == 0.0:
        why = "saturated, or independent of this stage"
        return f"flat Grad-CAM: {score}'s gradients are zero for this face ({why})"
    g, a = gradients[0][0].float(), activations[0][0].float()  # (C, h, w)
    if g.dim() != 3:
        return "flat Grad-CAM: the same value everywhere"
    raw = (g.mean((1, 2))[:, None, None] * a).sum(0)  # (h, w): before Grad-CAM's ReLU
    if float(raw.max()) <= 0.0:
        return f"flat Grad-CAM: every location lowers {score} (Grad-CAM keeps only what raises it)"
    gmax = float(g.abs().max())
    if gmax < TINY_GRADIENT:
        return (
            f"flat Grad-CAM: {score}'s gradients are near zero for this face (at most {gmax:.1e}): saturated"
        )
    return "flat Grad-CAM: the same value everywhere"


def grad_cam_checked(
    model: nn.Module, image: torch.Tensor, target_class: int = 1, stage: int | None = None
) -> tuple[np.ndarray, str]:
    """Grad-CAM of ``target_class`` (1 = fake) for one normalised image (3, s, s) on backbone stage
    ``stage`` (None: the stage the attention uses): the map (s, s) in [0, 1] and, when it is flat, the
    warning saying why (:func:`flat_cam_reason`; "" otherwise)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer, reshape = stage_target(model.backbone, stage)
    with torch.enable_grad(), GradCAM(LogitsOnly(model), [layer], reshape_transform=reshape) as cam:
        out = cam(input_tensor=image[None].clone(), targets=[ClassifierOutputTarget(target_class)])
        heat = np.nan_to_num(out[0].astype(np.float32))
        kept = cam.activations_and_grads  # read before the context releases them
        warning = flat_cam_reason(heat, kept.gradients, kept.activations, CLASS_NAMES[target_class])
    return heat, warning


def grad_cam(
    model: nn.Module, image: torch.Tensor, target_class: int = 1, stage: int | None = None
) -> np.ndarray:
    """Grad-CAM of ``target_class`` (1 = fake) for one normalised image (3, s, s) -> (s, s) in [0, 1], on
    backbone stage ``stage`` (None: the stage the attention uses); :func:`grad_cam_checked` also says
    why when it is flat."""
    return grad_cam_checked(model, image, target_class, stage)[0]
