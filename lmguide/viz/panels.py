"""Drawing helpers for ``lmguide.visualize``: mask fills, patch grids and labelled side-by-side panels.

Heat maps and mask outlines come from :mod:`lmguide.viz.overlays`, colour bars and layout from
:mod:`lmguide.viz.heat`; this module only adds what the one-image explanation needs on top of them.
Every function returns RGB uint8 arrays.
"""

from __future__ import annotations

import cv2
import numpy as np

from lmguide.viz.heat import Heat, render, tile_grid
from lmguide.viz.overlays import grid_overlay, mask_outline

MASK_COLOR = (0, 255, 120)


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Square ``size`` x ``size`` copy (area interpolation when shrinking, cubic when enlarging)."""
    interp = cv2.INTER_AREA if rgb.shape[0] >= size else cv2.INTER_CUBIC
    return cv2.resize(rgb, (size, size), interpolation=interp)


def mask_overlay(
    rgb: np.ndarray,
    mask: np.ndarray,
    points: np.ndarray | None = None,
    color=MASK_COLOR,
    alpha: float = 0.45,
) -> np.ndarray:
    """Tint ``rgb`` with ``mask`` (any size, [0, 1]; soft masks tint in proportion), outline it and mark
    ``points`` ((K, 2) pixel coordinates of ``rgb``) with small dots."""
    h, w = rgb.shape[:2]
    m = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    a = np.clip(m, 0.0, 1.0)[..., None] * alpha
    out = (rgb * (1 - a) + np.asarray(color, np.float32) * a).astype(np.uint8)
    out = mask_outline(out, m, color=color)
    for x, y in np.asarray(points if points is not None else np.empty((0, 2)))[:, :2]:
        cv2.circle(out, (round(float(x)), round(float(y))), 2, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def patch_grid_overlay(rgb: np.ndarray, attn: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``attn`` (gh, gw) shown patch by patch (no interpolation) with the patch grid drawn on top."""
    return grid_overlay(rgb, attn, alpha)


def side_by_side(tiles: list[np.ndarray | Heat], labels: list[str], title: str) -> np.ndarray:
    """Equal-size tiles in one row under ``title``, each labelled above; a :class:`Heat` tile has its
    colour bar to its right and its warning written across it."""
    if len(tiles) != len(labels):
        raise ValueError(f"{len(tiles)} tiles but {len(labels)} labels")
    return render(tile_grid([tiles], labels, title=title))
