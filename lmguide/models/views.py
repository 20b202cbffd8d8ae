"""Attention-guided crop (aux view) and drop (aug view), batched on the device (WS-DAN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


def _pick_maps(maps: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One map per sample, drawn with probability proportional to its mean activation: (B, h, w)."""
    b, m = maps.shape[:2]
    weights = maps.flatten(2).mean(-1) + 1e-6  # (B, M); all-zero maps -> uniform choice
    idx = torch.multinomial(weights / weights.sum(1, keepdim=True), 1, generator=generator).squeeze(1)
    return maps[torch.arange(b, device=maps.device), idx]


def _normalise(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    a = F.interpolate(a.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    return a / a.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]  # (B, H, W) in [0, 1]


def attention_crop(
    images: torch.Tensor,
    maps: torch.Tensor,
    threshold: tuple[float, float] = (0.4, 0.6),
    padding: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zoom into the box around the region where a chosen map exceeds a random threshold.

    An empty region (all-zero map) falls back to the whole image; the output has the input's size.
    """
    b, _, h, w = images.shape
    a = _normalise(_pick_maps(maps, generator), (h, w))  # (B, H, W)
    thr = torch.empty(b, device=a.device).uniform_(*threshold, generator=generator)
    on = a >= thr[:, None, None]
    rows, cols = on.any(2), on.any(1)  # (B, H), (B, W)
    empty = ~rows.any(1)
    ar_h = torch.arange(h, device=a.device)
    ar_w = torch.arange(w, device=a.device)
    y0 = torch.where(rows, ar_h, h).amin(1).float()
    y1 = torch.where(rows, ar_h, -1).amax(1).float() + 1
    x0 = torch.where(cols, ar_w, w).amin(1).float()
    x1 = torch.where(cols, ar_w, -1).amax(1).float() + 1
    y0, y1 = torch.where(empty, 0.0, y0), torch.where(empty, float(h), y1)
    x0, x1 = torch.where(empty, 0.0, x0), torch.where(empty, float(w), x1)
    py, px = padding * h, padding * w
    boxes = torch.stack(
        [
            torch.arange(b, device=a.device, dtype=torch.float32),
            (x0 - px).clamp_min(0),
            (y0 - py).clamp_min(0),
            (x1 + px).clamp_max(w),
            (y1 + py).clamp_max(h),
        ],
        1,
    )  # (B, 5)
    return roi_align(images, boxes.to(images.dtype), output_size=(h, w), aligned=True)


def attention_drop(
    images: torch.Tensor,
    maps: torch.Tensor,
    threshold: tuple[float, float] = (0.2, 0.5),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Erase the region where a chosen map exceeds a random threshold (forces other parts to be used)."""
    b, _, h, w = images.shape
    a = _normalise(_pick_maps(maps, generator), (h, w))
    thr = torch.empty(b, device=a.device).uniform_(*threshold, generator=generator)
    keep = (a < thr[:, None, None]).to(images.dtype).unsqueeze(1)  # (B, 1, H, W)
    return images * keep
