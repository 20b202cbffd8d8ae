"""Attention overlays: a face, its attention maps cell by cell, and the landmark region outlines; the
training overlays' grid of them (labelled columns and rows, a colour bar per map)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from lmguide.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lmguide.viz.heat import FLAT_ATOL, Heat, attention_warning, colormap, tile_grid


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Undo ImageNet normalisation: (3, H, W) tensor -> (H, W, 3) RGB uint8."""
    x = image[:3].detach().float().cpu().permute(1, 2, 0).numpy() * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def heat_map(attn: np.ndarray, height: int, width: int) -> np.ndarray:
    """The heat map of ``attn`` (any size) alone, resized to ``height`` x ``width``: RGB uint8 in the
    colour map of :mod:`lmguide.viz.heat`, ``attn.min()`` to ``attn.max()`` spanning its colours (the
    range its colour bar shows; a resize interpolates within it)."""
    lo, hi = float(attn.min()), float(attn.max())
    a = cv2.resize(attn.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    a = np.clip((a - lo) / max(hi - lo, FLAT_ATOL), 0.0, 1.0)
    return (colormap()(a)[..., :3] * 255 + 0.5).astype(np.uint8)


def heat_overlay(rgb: np.ndarray, attn: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend :func:`heat_map` of ``attn`` over ``rgb`` with opacity ``alpha``."""
    heat = heat_map(attn, *rgb.shape[:2])
    return (rgb * (1 - alpha) + heat * alpha).astype(np.uint8)


def mask_outline(rgb: np.ndarray, mask: np.ndarray, color=(255, 255, 255)) -> np.ndarray:
    out = rgb.copy()
    m = cv2.resize(
        (mask > 0.5).astype(np.uint8), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST
    )
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def grid_overlay(rgb: np.ndarray, attn: np.ndarray, alpha: float = 0.45, grid: float = 1.0) -> np.ndarray:
    """``attn`` (gh, gw) shown cell by cell (no interpolation: the map at its own resolution) over ``rgb``,
    with the cell borders drawn in white at opacity ``grid`` (1: solid, e.g. 0.3: faint)."""
    h, w = rgb.shape[:2]
    gh, gw = attn.shape
    blocky = cv2.resize(attn.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    out = heat_overlay(rgb, blocky, alpha)
    lines = out.copy()
    for i in range(1, gh):
        y = round(i * h / gh)
        cv2.line(lines, (0, y), (w - 1, y), (255, 255, 255), 1)
    for j in range(1, gw):
        x = round(j * w / gw)
        cv2.line(lines, (x, 0), (x, h - 1), (255, 255, 255), 1)
    return cv2.addWeighted(lines, grid, out, 1 - grid, 0)


#: outline colours of the landmark regions in the overlays (RGB); other regions and a whole mask: white
REGION_COLORS = {"eyes": (0, 255, 255), "nose": (255, 255, 0), "mouth": (255, 0, 255)}
WHITE = (255, 255, 255)


def outline_legend(regions: tuple[str, ...] | list[str] = ()) -> str:
    """What the outlines of :func:`attention_row` are, for a title: each region's colour, or the mask."""
    names = {(0, 255, 255): "cyan", (255, 255, 0): "yellow", (255, 0, 255): "magenta", WHITE: "white"}
    if not len(regions):
        return "outline: the landmark mask"
    return "outlines: " + ", ".join(f"{r} {names[REGION_COLORS.get(r, WHITE)]}" for r in regions)


def attention_row(
    image: torch.Tensor,
    maps: torch.Tensor,
    mask: torch.Tensor,
    region_masks: torch.Tensor | None = None,
    regions: tuple[str, ...] | list[str] = (),
) -> list[np.ndarray | Heat]:
    """One row of tiles: face | mean attention | each head's map, every map drawn at its own resolution
    (one flat colour per cell, the cell grid faint) with the outline of each landmark region in its
    colour (``region_masks`` (R, H, W) named ``regions``), or of the whole mask when no region masks
    are given. The maps are :class:`Heat` tiles (their colour bars and flat-map warnings go with them).

    image (3, H, W) normalised, maps (M, h, w), mask (1, H, W) or (H, W)."""
    rgb = to_uint8(image)
    if region_masks is not None and len(regions):
        outlines = region_masks.detach().float().cpu().reshape(len(regions), *rgb.shape[:2]).numpy()
        colors = [REGION_COLORS.get(r, WHITE) for r in regions]
    else:
        outlines, colors = mask.detach().float().cpu().reshape(1, *rgb.shape[:2]).numpy(), [WHITE]
    maps = maps.detach().float().cpu()
    tiles: list[np.ndarray | Heat] = [rgb]
    names = [f"mean attention map ({len(maps)} maps)", *(f"attention map {i}" for i in range(len(maps)))]
    for a, name in zip((maps.mean(0), *maps), names, strict=True):
        tile = grid_overlay(rgb, a.numpy(), grid=0.3)
        for m, color in zip(outlines, colors, strict=True):
            tile = mask_outline(tile, m, color)
        tiles.append(Heat(tile, a.numpy(), "", attention_warning(a.numpy()), name))
    return tiles


def attention_figure(rows: list[list[np.ndarray | Heat]], row_labels: list[str], title: str):
    """The Figure of :func:`attention_row` rows, the columns labelled (face, mean of M maps, map i),
    each row labelled by ``row_labels``, ``title`` on top (draw it with :func:`lmguide.viz.heat.render`)."""
    n_maps = max(len(r) for r in rows) - 2
    columns = ["face", f"mean of {n_maps} maps", *(f"map {i}" for i in range(n_maps))]
    return tile_grid(rows, columns, row_labels, title)
