"""Attention overlays: a face, its mean attention as a heat map, and the landmark mask outline."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from lmguide.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Undo ImageNet normalisation: (3, H, W) tensor -> (H, W, 3) RGB uint8."""
    x = image[:3].detach().float().cpu().permute(1, 2, 0).numpy() * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def heat_map(attn: np.ndarray, height: int, width: int) -> np.ndarray:
    """The [0, 1]-scaled JET heat map of ``attn`` (any size) alone, resized to ``height`` x ``width``:
    RGB uint8."""
    a = cv2.resize(attn.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-8)
    return cv2.cvtColor(cv2.applyColorMap((a * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


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


def attention_panel(
    image: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, title: str = ""
) -> np.ndarray:
    """One row: face | mean attention over the face with the mask outline | each head's map.

    image (3, H, W) normalised, maps (M, h, w), mask (1, H, W) or (H, W). Returns RGB uint8.
    """
    rgb = to_uint8(image)
    m = mask.detach().float().cpu().reshape(rgb.shape[:2]).numpy()
    maps_np = maps.detach().float().cpu().numpy()
    tiles = [rgb, mask_outline(heat_overlay(rgb, maps_np.mean(0)), m)]
    tiles += [heat_overlay(rgb, a) for a in maps_np]
    row = np.concatenate(tiles, axis=1)
    if title:
        bar = np.zeros((18, row.shape[1], 3), np.uint8)
        cv2.putText(bar, title, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        row = np.concatenate([bar, row], axis=0)
    return row
