"""Grad-CAM (Selvaraju et al., ICCV 2017; pytorch-grad-cam) on a backbone stage: by default the one the
attention module works on, or any earlier one (:func:`lmguide.viz.stages.stage_target`), for CNN,
Swin and ViT backbones."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lmguide.viz.stages import stage_target


class LogitsOnly(nn.Module):
    """``model(x).logits``: the plain classifier output Grad-CAM expects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def grad_cam(
    model: nn.Module, image: torch.Tensor, target_class: int = 1, stage: int | None = None
) -> np.ndarray:
    """Grad-CAM of ``target_class`` (1 = fake) for one normalised image (3, s, s) -> (s, s) in [0, 1], on
    backbone stage ``stage`` (None: the stage the attention uses)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer, reshape = stage_target(model.backbone, stage)
    with torch.enable_grad(), GradCAM(LogitsOnly(model), [layer], reshape_transform=reshape) as cam:
        out = cam(input_tensor=image[None].clone(), targets=[ClassifierOutputTarget(target_class)])
    return np.nan_to_num(out[0].astype(np.float32))
