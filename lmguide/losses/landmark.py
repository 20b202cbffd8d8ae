"""Landmark guidance losses: pull the attention maps onto the landmark region mask.

Every form first turns the attention maps (B, M, h, w) into one map per sample, ``Ā`` (B, H, W):
resized to the mask (bilinear) and averaged over the M heads. ``L`` (B, H, W) is the mask in [0, 1].

* ``simple``: ``-mean(Ā·L) + 0.5·mean(Ā·(1-L))`` with ``Ā`` scaled to [0, 1] per sample (divided by
  its spatial max; without that the form is unbounded below).
* ``ratio``: ``-log(S_lm / (S_lm + S_non + ε))``, ``S_lm = ΣĀ·L / (ΣL + ε)``,
  ``S_non = ΣĀ·(1-L) / (Σ(1-L) + ε)``: area-normalised mean attention inside vs outside; scale-free.

Samples whose mask is empty have no target: they contribute zero and are counted in ``self.last_empty``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FORMS = ("simple", "ratio")


def mean_attention(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, M, h, w) -> Ā (B, H, W): bilinear resize to the mask size, then the mean over heads."""
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False).mean(1)


def max_normalise(a: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Divide each (H, W) map by its maximum (maps are non-negative), giving values in [0, 1]."""
    return a / a.flatten(1).amax(1).clamp_min(eps)[:, None, None]


def simple_form(abar: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample ``-mean(Ā·L) + 0.5·mean(Ā·(1-L))``: (B, H, W) x2 -> (B,)."""
    return -(abar * mask).flatten(1).mean(1) + 0.5 * (abar * (1 - mask)).flatten(1).mean(1)


def ratio_form(abar: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample ``-log(S_lm / (S_lm + S_non + ε))``: (B, H, W) x2 -> (B,)."""
    a, m = abar.flatten(1), mask.flatten(1)
    s_lm = (a * m).sum(1) / (m.sum(1) + eps)
    s_non = (a * (1 - m)).sum(1) / ((1 - m).sum(1) + eps)
    # the clamp only guards log(0) when a map has no mass inside the mask at all
    return -torch.log((s_lm / (s_lm + s_non + eps)).clamp_min(1e-12))


def attention_in_mask(maps: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Share of the attention mass inside the mask, per sample: ΣĀ·L / ΣĀ, (B,). Uniform attention
    scores the mask's area fraction; 1 means every bit of attention lies on the landmarks."""
    mask = mask.squeeze(1) if mask.dim() == 4 else mask
    a = mean_attention(maps, mask.shape[-2:]).flatten(1)
    return (a * mask.flatten(1)).sum(1) / a.sum(1).clamp_min(eps)


class LandmarkLoss(nn.Module):
    """One landmark loss form as a module: ``forward(maps (B,M,h,w), mask (B,1,H,W), labels)`` -> scalar.

    ``apply_to``: ``both`` (every sample) or ``real`` (real faces only).
    """

    def __init__(self, form: str = "ratio", apply_to: str = "both", eps: float = 1e-6):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"loss.landmark.form must be one of {FORMS}, got {form!r}")
        if apply_to not in ("both", "real"):
            raise ValueError(f"loss.landmark.apply_to must be 'both' or 'real', got {apply_to!r}")
        self.form, self.apply_to, self.eps = form, apply_to, eps
        self.last_empty = 0

    def forward(
        self, maps: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        mask = mask.squeeze(1) if mask.dim() == 4 else mask  # (B, H, W)
        abar = mean_attention(maps, mask.shape[-2:])
        if self.form == "simple":
            per = simple_form(max_normalise(abar), mask)
        else:
            per = ratio_form(abar, mask, self.eps)
        valid = mask.flatten(1).sum(1) > 0
        if self.apply_to == "real" and labels is not None:
            valid = valid & (labels == 0)
        self.last_empty = int((mask.flatten(1).sum(1) == 0).sum())
        if not valid.any():
            return per.sum() * 0.0  # keeps the graph, contributes nothing
        return per[valid].mean()


def pointing_hit(maps: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Pointing game, per sample: 1.0 when the peak of Ā falls inside the mask (L > threshold), (B,)."""
    mask = mask.squeeze(1) if mask.dim() == 4 else mask
    a = mean_attention(maps, mask.shape[-2:]).flatten(1)
    peak = a.argmax(1)
    return (mask.flatten(1).gather(1, peak[:, None]).squeeze(1) > threshold).float()
