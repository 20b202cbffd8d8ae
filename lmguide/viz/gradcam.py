"""Grad-CAM (Selvaraju et al., ICCV 2017; pytorch-grad-cam) on the feature stage the attention
module works on, for CNN and ViT backbones."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lmguide.errors import VisualizeError
from lmguide.models.backbones import feature_stage
from lmguide.viz.vit_attention import vit_grid


class LogitsOnly(nn.Module):
    """``model(x).logits``: the plain classifier output Grad-CAM expects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def gradcam_target(backbone: nn.Module):
    """``(layer, reshape_transform)`` for Grad-CAM: the feature stage the attention works on.

    CNNs: the stage ``out_index`` picks (timm's ``feature_info``), already (B, C, h, w); later stages
    of the features-only net never reach the logits. ViTs: the block ``out_index`` picks, whose
    tokens are reshaped to the patch grid (prefix/class tokens dropped).
    """
    net = backbone.model
    inner, layer = getattr(net, "model", net), feature_stage(net)
    grid = vit_grid(net)
    if grid is None:
        return layer, None
    prefix = int(inner.num_prefix_tokens)

    def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        if n - prefix != grid[0] * grid[1]:
            raise VisualizeError(f"{n - prefix} patch tokens do not fill the {grid[0]}x{grid[1]} patch grid")
        return tokens[:, prefix:].reshape(b, grid[0], grid[1], c).permute(0, 3, 1, 2)

    return layer, tokens_to_grid


def grad_cam(model: nn.Module, image: torch.Tensor, target_class: int = 1) -> np.ndarray:
    """Grad-CAM of ``target_class`` (1 = fake) for one normalised image (3, s, s) -> (s, s) in [0, 1]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer, reshape = gradcam_target(model.backbone)
    with torch.enable_grad(), GradCAM(LogitsOnly(model), [layer], reshape_transform=reshape) as cam:
        out = cam(input_tensor=image[None].clone(), targets=[ClassifierOutputTarget(target_class)])
    return np.nan_to_num(out[0].astype(np.float32))
