"""Pieces shared by the attention modules: pooled unit-norm features and the feature-energy map."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pooled_unit_features(fmap: torch.Tensor) -> torch.Tensor:
    """Global average pool (B, C, h, w) -> (B, C), L2-normalised (the heads expect ``‖f‖ = 1``)."""
    return F.normalize(fmap.mean((2, 3)), dim=-1)


def energy_map(fmap: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Feature energy per position, as a spatial distribution: (B, C, h, w) -> (B, 1, h, w).

    ``E = mean_c(x_c²)`` (activation-based attention, Zagoruyko & Komodakis, ICLR 2017), divided by its
    sum over the h·w positions of each sample, so every map is >= 0 and sums to 1. Computed in float32
    (squares of large activations overflow half precision) and differentiable everywhere: a loss on it
    reaches whatever produced ``fmap``.
    """
    e = fmap.float().pow(2).mean(1, keepdim=True)  # (B, 1, h, w)
    return e / e.sum((2, 3), keepdim=True).clamp_min(eps)
