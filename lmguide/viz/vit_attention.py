"""ViT attention read from the model itself: the patch grid of a timm ViT backbone and the CLS
token's attention over the patches (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021;
Caron et al., DINO, ICCV 2021, for reading the CLS attention as a saliency map)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lmguide.models.backbones import feature_stage, vit_model


def vit_grid(net: nn.Module) -> tuple[int, int] | None:
    """Patch grid (gh, gw) if ``net`` (a TimmBackbone's ``.model``) is a ViT, else None."""
    inner = vit_model(net)
    return None if inner is None else tuple(inner.patch_embed.grid_size)


def vit_cls_attention(model: nn.Module, image: torch.Tensor) -> np.ndarray | None:
    """CLS-token attention over the patch grid in the ViT block the attention module uses (mean over heads).

    Returns (gh, gw) shares of the CLS token's attention (they sum to 1 minus what it pays to the prefix
    tokens), or None for a non-ViT backbone. timm's attention is run unfused for this one pass so its
    softmax matrix can be read where it enters ``attn_drop``.
    """
    net = model.backbone.model
    grid = vit_grid(net)
    if grid is None:
        return None
    inner, attn = vit_model(net), feature_stage(net).attn
    captured: list[torch.Tensor] = []
    handle = attn.attn_drop.register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach()))
    fused, attn.fused_attn = attn.fused_attn, False
    try:
        with torch.no_grad():
            model(image[None])
    finally:
        attn.fused_attn = fused
        handle.remove()
    probs = captured[-1][0]  # (heads, N, N), rows sum to 1
    prefix = int(inner.num_prefix_tokens)
    cls_to_patches = probs[:, 0, prefix:].mean(0)  # (gh * gw,)
    return cls_to_patches.reshape(grid).float().cpu().numpy()
