"""A clip model's attention across one clip: a strip of its frames, each crop with its mean attention."""

from __future__ import annotations

import logging

import numpy as np
import torch

from lmguide.viz.heat import Heat, attention_warning, render, tile_grid, warnings_of
from lmguide.viz.overlays import heat_overlay, to_uint8

log = logging.getLogger(__name__)


def clip_strip(
    images: torch.Tensor,
    maps: torch.Tensor,
    frames: list[int],
    title: str,
    size: int = 256,
    alpha: float = 0.45,
    warnings: list[str] | None = None,
) -> np.ndarray:
    """One row: frame ``k``'s face crop with the mean of its attention maps over it and its colour bar,
    labelled with its sampled frame index; ``title`` (P(fake) of the clip) above. images (T, 3, S, S)
    normalised, maps (T, M, h, w) (the clip model's maps are per frame). A flat map has its warning
    written on it and logged, and appended to ``warnings`` when given. Returns RGB uint8, ``size`` px
    per frame plus its colour bar."""
    import cv2

    tiles = []
    for k in range(images.shape[0]):
        rgb = cv2.resize(to_uint8(images[k]), (size, size), interpolation=cv2.INTER_LINEAR)
        mean = maps[k].detach().float().cpu().numpy().mean(0)
        name = f"mean attention map of frame {frames[k]}"
        tiles.append(Heat(heat_overlay(rgb, mean, alpha), mean, "attention", attention_warning(mean), name))
    for w in warnings_of(tiles):
        log.warning("%s", w)
        if warnings is not None:
            warnings.append(w)
    return render(tile_grid([tiles], [f"frame {f}" for f in frames], title=title))
