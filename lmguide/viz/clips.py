"""A clip model's attention across one clip: a strip of its frames, each crop with its mean attention."""

from __future__ import annotations

import numpy as np
import torch

from lmguide.viz.figures import figure_rgb, pyplot
from lmguide.viz.overlays import heat_overlay, to_uint8


def clip_strip(
    images: torch.Tensor,
    maps: torch.Tensor,
    frames: list[int],
    title: str,
    size: int = 256,
    alpha: float = 0.45,
) -> np.ndarray:
    """One row: frame ``k``'s face crop with the mean of its attention maps over it, titled with its
    sampled frame index; ``title`` (P(fake) of the clip) above. images (T, 3, S, S) normalised, maps
    (T, M, h, w) (the clip model's maps are per frame). Returns RGB uint8, about ``size`` px per frame."""
    import cv2

    plt = pyplot()
    t = images.shape[0]
    dpi = 100
    fig, axes = plt.subplots(1, t, figsize=(t * size / dpi, size / dpi + 0.6), dpi=dpi, squeeze=False)
    for k, ax in enumerate(axes[0]):
        rgb = cv2.resize(to_uint8(images[k]), (size, size), interpolation=cv2.INTER_LINEAR)
        ax.imshow(heat_overlay(rgb, maps[k].detach().float().cpu().numpy().mean(0), alpha))
        ax.set_title(f"frame {frames[k]}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_rgb(fig)
