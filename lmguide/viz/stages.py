"""Per-stage views of a backbone: Grad-CAM of several stages side by side, and Swin's window attention.

A TimmBackbone is timm's features-only net cut after ``out_index``, so the stages it can explain are
0 … the one the attention uses (later stages are pruned and never reach the logits). Each stage's output
is brought to (B, C, h, w) for Grad-CAM: CNN stages already are, Swin stages are NHWC, ViT blocks are
tokens on the patch grid.

Swin (Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV 2021)
attends inside non-overlapping windows of the token grid; every other block shifts the windows by half
a window. :func:`window_attention` reads one block's softmax per window and puts it back on the grid in
image coordinates (shift undone), so each window's share of attention per token can be drawn with the
window grid on top.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from lmguide.models.backbones import feature_stage, vit_model
from lmguide.runs.errors import ConfigError, VisualizeError


def _inner(backbone: nn.Module) -> nn.Module:
    net = backbone.model
    return getattr(net, "model", net)


def stage_names(backbone: nn.Module) -> list[str]:
    """Module names (in timm's model) of the feature stages 0 … the one the attention uses."""
    inner = _inner(backbone)
    used = backbone.model.feature_info.module_name()[-1]
    names = [d["module"] for d in inner.feature_info]
    return names[: names.index(used) + 1]


def stage_target(backbone: nn.Module, index: int | None = None) -> tuple[nn.Module, Callable | None]:
    """``(layer, reshape_transform)`` for Grad-CAM on stage ``index`` (None: the stage the attention uses).

    The reshape brings the layer's output to (B, C, h, w): None for CNN stages, NHWC -> NCHW for Swin,
    tokens (prefix tokens dropped) -> patch grid for ViT blocks.
    """
    names = stage_names(backbone)
    if index is None:
        index = len(names) - 1
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(names):
        raise ConfigError(
            f"layers: stage {index!r} is not one this backbone computes; {backbone.name} up to out_index "
            f"{backbone.out_index} has stages 0..{len(names) - 1} ({', '.join(names)})"
        )
    inner = _inner(backbone)
    layer = inner.get_submodule(names[index]) if index < len(names) - 1 else feature_stage(backbone.model)
    vit = vit_model(backbone.model)
    if vit is not None:
        grid, prefix = tuple(vit.patch_embed.grid_size), int(vit.num_prefix_tokens)

        def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
            b, n, c = tokens.shape
            if n - prefix != grid[0] * grid[1]:
                raise VisualizeError(
                    f"{n - prefix} patch tokens do not fill the {grid[0]}x{grid[1]} patch grid"
                )
            return tokens[:, prefix:].reshape(b, grid[0], grid[1], c).permute(0, 3, 1, 2)

        return layer, tokens_to_grid
    if getattr(inner, "output_fmt", "NCHW") == "NHWC":
        return layer, lambda x: x.permute(0, 3, 1, 2)
    return layer, None


def stage_label(backbone: nn.Module, index: int) -> str:
    info = _inner(backbone).feature_info[index]
    return f"stage {index} (stride {info['reduction']}, {info['num_chs']} ch)"


# -- Swin window attention ----------------------------------------------------------------------------


def swin_blocks(backbone: nn.Module) -> list[list[nn.Module]]:
    """The Swin blocks per computed stage (empty for any other backbone)."""
    from timm.models.swin_transformer import SwinTransformerBlock

    inner = _inner(backbone)
    if not hasattr(inner, "layers"):
        return []
    stages = [[m for m in stage.modules() if isinstance(m, SwinTransformerBlock)] for stage in inner.layers]
    return [s for s in stages if s]


@dataclass
class WindowMap:
    attention: (
        np.ndarray
    )  # (H, W) per token: the mean attention it receives from its window (sums to 1 per window)
    window: tuple[int, int]  # window size in tokens
    shift: tuple[int, int]  # the block's cyclic shift in tokens (0 for a W-MSA block)
    stage: int
    block: int


def window_attention(model: nn.Module, image: torch.Tensor, block: Sequence[int] | None = None) -> WindowMap:
    """Window attention of one Swin block for one normalised image (3, s, s).

    ``block``: ``[stage, block]`` (negative indices count from the end); None = the last block of the
    stage the attention uses. The block's attention is run unfused for this one pass so its softmax
    (windows, heads, N, N) can be read where it enters ``attn_drop``; it is averaged over heads and over
    the queries of each window (each window's N shares sum to 1), laid back on the token grid and
    rolled by the block's shift, so the map is in image coordinates.
    """
    stages = swin_blocks(model.backbone)
    if not stages:
        raise ConfigError(
            f"window attention needs a Swin backbone (backbone=swin), not {model.backbone.name}"
        )
    si, bi = (-1, -1) if block is None else tuple(block)
    try:
        blk = stages[si][bi]
    except (IndexError, TypeError):
        sizes = ", ".join(f"stage {i}: {len(s)} blocks" for i, s in enumerate(stages))
        raise ConfigError(f"window_block={list(block)} is not a block of this Swin ({sizes})") from None
    si, bi = si % len(stages), bi % len(stages[si])
    captured: dict[str, torch.Tensor | tuple] = {}
    hooks = [
        blk.register_forward_pre_hook(lambda mod, inp: captured.__setitem__("shape", tuple(inp[0].shape))),
        blk.attn.attn_drop.register_forward_hook(lambda mod, inp, out: captured.__setitem__("probs", inp[0])),
    ]
    fused, blk.attn.fused_attn = blk.attn.fused_attn, False
    try:
        with torch.no_grad():
            model(image[None])
    finally:
        blk.attn.fused_attn = fused
        for h in hooks:
            h.remove()
    _, h, w, _ = captured["shape"]  # (1, H, W, C) tokens entering the block
    wh, ww = blk.window_size
    sh, sw = blk.shift_size
    hp, wp = -(-h // wh) * wh, -(-w // ww) * ww  # padded to whole windows
    received = captured["probs"].float().mean(1).mean(1)  # (windows, N): heads, then queries averaged
    grid = received.reshape(hp // wh, wp // ww, wh, ww).permute(0, 2, 1, 3).reshape(hp, wp)[:h, :w]
    grid = torch.roll(grid, shifts=(sh, sw), dims=(0, 1))  # undo the cyclic shift
    return WindowMap(grid.cpu().numpy(), (wh, ww), (sh, sw), si, bi)


def window_grid_overlay(rgb: np.ndarray, wmap: WindowMap, heat: np.ndarray) -> np.ndarray:
    """``heat`` (an overlay of ``wmap.attention`` over ``rgb``) with the block's window borders drawn:
    every window's edge, shifted like the block's windows, in white."""
    out = heat.copy()
    size_h, size_w = rgb.shape[:2]
    h, w = wmap.attention.shape
    for k in range(0, h, wmap.window[0]):
        y = round(((k + wmap.shift[0]) % h) * size_h / h)
        cv2.line(out, (0, y), (size_w - 1, y), (255, 255, 255), 1)
    for k in range(0, w, wmap.window[1]):
        x = round(((k + wmap.shift[1]) % w) * size_w / w)
        cv2.line(out, (x, 0), (x, size_h - 1), (255, 255, 255), 1)
    return out
