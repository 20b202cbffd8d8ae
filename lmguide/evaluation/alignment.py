"""Where attention maps sit against the landmark masks, and how alike the maps of one face are.

Per sample, on the head-averaged map Ā resized to the mask (:func:`~lmguide.losses.landmark.mean_attention`,
the same Ā the landmark loss compares): the share of attention inside the mask and inside each region,
the pointing game, and the mean correlation between the M maps (map diversity).
"""

from __future__ import annotations

import torch

from lmguide.losses.landmark import as_spatial, mean_attention


def attention_in_mask(maps: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Share of the attention mass inside the mask, per sample: ΣĀ·L / ΣĀ, (B,). Uniform attention
    scores the mask's area fraction; 1 means every bit of attention lies on the landmarks."""
    mask = as_spatial(mask)
    a = mean_attention(maps, mask.shape[-2:]).flatten(1)
    return (a * mask.flatten(1)).sum(1) / a.sum(1).clamp_min(eps)


def attention_in_regions(maps: torch.Tensor, region_masks: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Share of the attention mass inside each region's mask, per sample: ΣĀ·L_r / ΣĀ, (B, R).
    ``region_masks`` (B, R, H, W), one mask per region (eyes, nose, mouth): what :func:`attention_in_mask`
    gives for the union, split by region (disjoint regions sum to it)."""
    a = mean_attention(maps, region_masks.shape[-2:]).flatten(1)  # (B, H*W)
    inside = torch.einsum("bp,brp->br", a, region_masks.flatten(2).to(a.dtype))
    return inside / a.sum(1, keepdim=True).clamp_min(eps)


def map_correlation(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """How alike the M attention maps of a sample are: the mean Pearson correlation over the M(M-1)/2
    pairs of maps, each map's h·w cells one observation, (B,). 1: the heads collapsed into one map;
    0: unrelated maps. A constant map (no spatial variation) correlates 0 with any map; NaN for M = 1."""
    b, m = maps.shape[:2]
    if m < 2:
        return maps.new_full((b,), float("nan"))
    x = maps.flatten(2).float()  # (B, M, h*w)
    x = x - x.mean(-1, keepdim=True)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    corr = x @ x.transpose(1, 2)  # (B, M, M)
    off = corr.sum((1, 2)) - corr.diagonal(dim1=1, dim2=2).sum(1)
    return off / (m * (m - 1))


def attention_summary(scored: dict) -> dict[str, float]:
    """The means over a scored set's faces (:func:`~lmguide.evaluation.metrics.score_split`) of the share on
    each region (``attn_<region>``) and of ``map_corr``, which is left out for single-map attention (NaN)."""
    keys = [k for k in scored if k.startswith("attn_") and k != "attn_in_lm"] + ["map_corr"]
    present = [k for k in keys if k in scored and not scored[k].isnan().all()]
    return {k: float(scored[k].float().nanmean()) for k in present}


def pointing_hit(maps: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Pointing game, per sample: 1.0 when the peak of Ā falls inside the mask (L > threshold), (B,)."""
    mask = as_spatial(mask)
    a = mean_attention(maps, mask.shape[-2:]).flatten(1)
    peak = a.argmax(1)
    return (mask.flatten(1).gather(1, peak[:, None]).squeeze(1) > threshold).float()
