"""Landmark guidance losses: pull the attention maps onto the landmark region mask.

Every form except ``per_head`` first turns the attention maps (B, M, h, w) into one map per sample,
``Ā`` (B, H, W): resized to the mask (bilinear) and averaged over the M heads. ``L`` (B, H, W) is the
target in [0, 1] (the landmark mask, or a fake's blend mask, see ``apply_to``). Attention maps are
non-negative (every attention module's are). Per sample (sums and means over the H·W pixels):

* ``simple``: ``-mean(Ā·L) + 0.5·mean(Ā·(1-L))`` with ``Ā`` scaled to [0, 1] per sample (divided by
  its spatial max; ``simple_scale=none`` keeps the raw ``Ā``, the formula as written, which is
  unbounded below).
* ``ratio``: ``-log(S_lm / (S_lm + S_non + ε))``, ``S_lm = ΣĀ·L / (ΣL + ε)``,
  ``S_non = ΣĀ·(1-L) / (Σ(1-L) + ε)``: area-normalised mean attention inside vs outside; scale-free.
* ``mse``: ``mean((norm(Ā) - L)²)``, ``norm(Ā) = (Ā - min Ā) / (max Ā - min Ā + ε)`` (per-sample
  min-max): GAIN-style external supervision, the attention map regressed onto the mask itself.
* ``kl``: ``KL(P ‖ Q) = Σ P·log(P / Q)`` between the mask as a spatial distribution, ``P = L / ΣL``,
  and the attention as one, ``Q = (Ā + ε) / Σ(Ā + ε)``. The ε-smoothing of ``Q`` keeps ``log Q``
  finite where the attention is exactly 0; pixels outside the mask have ``P = 0`` and add nothing
  (``0·log 0 = 0``), so the loss is 0 only when the attention is spread over the mask like ``L``.
* ``per_head``: head ``m`` is pulled to landmark region ``m`` (the regions of ``conf/landmarks/``,
  as ``region_masks`` (B, R, H, W)) with the ``base`` form (one of the four above, ``ratio`` by
  default) on that head's own resized map, then averaged over heads: the heads specialise instead
  of all copying one average. M == R assigns one region per head; M > R cycles the regions (head
  ``m`` gets region ``m mod R``, so with 4 heads and eyes/nose/mouth the 4th head also takes the
  eyes); M < R is refused (a region would have no head).

``apply_to`` chooses the samples and their targets: ``both`` (every sample against the landmark
mask), ``real`` (real faces only) or ``fake_blend`` (reals against the landmark mask, fakes against
their blend mask: a self-blended fake knows where it was altered). A blend mask is scaled to a
maximum of 1 per sample (it marks where, whatever the blend ratio); fakes without one (all zero:
real deepfakes, no SBI) have no target. With ``per_head`` a fake's blend mask is the target of
every head.

A sample (or, for ``per_head``, a head) whose target is empty contributes zero: the loss is the mean
over the samples that have a target, and the empty ones among the samples the loss applies to are
counted in ``self.last_empty``. No form gives NaN for an empty target or one covering everything.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: The forms applied to one map against one target (``per_head`` applies one of them per head).
BASE_FORMS = ("simple", "ratio", "mse", "kl")
#: ``simple_scale``: ``max`` divides Ā by its spatial max before the simple form, ``none`` does not
SIMPLE_SCALES = ("max", "none")
FORMS = (*BASE_FORMS, "per_head")
APPLY_TO = ("both", "real", "fake_blend")


def resize_maps(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(B, M, h, w) -> (B, M, H, W): bilinear resize to the mask size, in float32."""
    return F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)


def mean_attention(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(B, M, h, w) -> Ā (B, H, W): bilinear resize to the mask size, then the mean over heads."""
    return resize_maps(maps, size).mean(1)


def max_normalise(a: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Divide each (H, W) map by its maximum (maps are non-negative), giving values in [0, 1]."""
    return a / a.flatten(1).amax(1).clamp_min(eps)[:, None, None]


def simple_form(
    abar: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6, scale: str = "max"
) -> torch.Tensor:
    """Per-sample ``-mean(Ā·L) + 0.5·mean(Ā·(1-L))``: (B, H, W) x2 -> (B,). ``scale="max"`` divides ``Ā``
    by its spatial maximum first (bounded in [-1, 0.5]); ``scale="none"`` is the formula as written on
    the raw ``Ā``, unbounded below: the attention can lower it by growing inside the mask."""
    a = max_normalise(abar, eps) if scale == "max" else abar
    return -(a * mask).flatten(1).mean(1) + 0.5 * (a * (1 - mask)).flatten(1).mean(1)


def ratio_form(abar: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample ``-log(S_lm / (S_lm + S_non + ε))``: (B, H, W) x2 -> (B,)."""
    a, m = abar.flatten(1), mask.flatten(1)
    s_lm = (a * m).sum(1) / (m.sum(1) + eps)
    s_non = (a * (1 - m)).sum(1) / ((1 - m).sum(1) + eps)
    # the clamp only guards log(0) when a map has no mass inside the mask at all
    return -torch.log((s_lm / (s_lm + s_non + eps)).clamp_min(1e-12))


def minmax_normalise(a: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each (H, W) map to [0, 1]: ``(a - min) / (max - min + ε)``; a flat map becomes 0."""
    flat = a.flatten(1)
    lo, hi = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
    return (a - lo) / (hi - lo + eps)


def mse_form(abar: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample ``mean((norm(Ā) - L)²)``, per-sample min-max ``norm``: (B, H, W) x2 -> (B,)."""
    return (minmax_normalise(abar, eps) - mask).pow(2).flatten(1).mean(1)


def kl_form(abar: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample ``KL(L / ΣL ‖ (Ā + ε) / Σ(Ā + ε))``: (B, H, W) x2 -> (B,). An empty mask gives 0."""
    m, a = mask.flatten(1), abar.flatten(1) + eps
    p = m / m.sum(1, keepdim=True).clamp_min(eps)
    log_q = torch.log(a) - torch.log(a.sum(1, keepdim=True))
    return (torch.xlogy(p, p) - p * log_q).sum(1)


FORM_FNS = {"simple": simple_form, "ratio": ratio_form, "mse": mse_form, "kl": kl_form}


def as_spatial(t: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, H, W); (B, H, W) unchanged."""
    return t.squeeze(1) if t.dim() == 4 else t


class LandmarkLoss(nn.Module):
    """One landmark loss form as a module:
    ``forward(maps (B,M,h,w), mask (B,1,H,W), labels, region_masks=(B,R,H,W), blend_mask=(B,1,H,W))``
    -> scalar.

    Args:
        form: one of :data:`FORMS` (see the module docstring).
        apply_to: ``both``, ``real`` or ``fake_blend`` (needs ``labels`` and ``blend_mask``).
        eps: the ε of the formulas.
        base: the form ``per_head`` applies to each head (one of :data:`BASE_FORMS`).
        regions: the landmark region names (``per_head`` only, and then required): the data yields
            one region mask per name, in this order (``data.region_masks`` follows this key).
    """

    def __init__(
        self,
        form: str = "ratio",
        apply_to: str = "both",
        eps: float = 1e-6,
        base: str = "ratio",
        regions: Sequence[str] | None = None,
        simple_scale: str = "max",
    ):
        super().__init__()
        if simple_scale not in SIMPLE_SCALES:
            raise ValueError(
                f"loss.landmark.simple_scale must be one of {SIMPLE_SCALES}, got {simple_scale!r}"
            )
        if form not in FORMS:
            raise ValueError(f"loss.landmark.form must be one of {FORMS}, got {form!r}")
        if apply_to not in APPLY_TO:
            raise ValueError(f"loss.landmark.apply_to must be one of {APPLY_TO}, got {apply_to!r}")
        if base not in BASE_FORMS:
            raise ValueError(f"loss.landmark.base must be one of {BASE_FORMS}, got {base!r}")
        if not eps > 0:
            raise ValueError(f"loss.landmark.eps must be > 0, got {eps}")
        if isinstance(regions, str):
            regions = [regions]
        regions = None if regions is None else tuple(str(r) for r in regions)
        if form == "per_head" and not regions:
            raise ValueError(
                "loss.landmark.form=per_head needs loss.landmark.regions (the landmark region names, "
                "${landmarks.regions} in conf/loss/per_head.yaml): use loss=per_head"
            )
        if form != "per_head" and regions:
            raise ValueError(
                f"loss.landmark.regions is only used by form=per_head (it makes the data draw one mask "
                f"per region), got {list(regions)} with form={form}: set it to null"
            )
        self.form, self.apply_to, self.eps, self.base, self.regions = form, apply_to, eps, base, regions
        self.simple_scale = simple_scale
        self.last_empty = 0

    @property
    def needs_regions(self) -> bool:
        return self.form == "per_head"

    @property
    def needs_blend(self) -> bool:
        return self.apply_to == "fake_blend"

    def head_regions(self, num_maps: int, num_regions: int | None = None) -> list[int]:
        """Region index of each head for ``per_head``: ``m mod R``; fewer heads than regions is refused."""
        if num_regions is None:
            assert self.regions is not None, "per_head without loss.landmark.regions is refused in __init__"
            num_regions = len(self.regions)
        r = num_regions
        if self.regions is not None and r != len(self.regions):
            raise ValueError(
                f"loss.landmark.form=per_head: the batch has {r} region masks but loss.landmark.regions "
                f"names {len(self.regions)}: {list(self.regions)} (data.region_masks must follow it)"
            )
        if num_maps < r:
            names = list(self.regions) if self.regions else f"{r} regions"
            raise ValueError(
                f"loss.landmark.form=per_head pulls head m to landmark region m, so it needs at least as "
                f"many attention maps as regions: the attention gives {num_maps} map(s) (attention.num_maps "
                f"for attention=multi, the ViT's heads for vit_cls, 1 for the single-map modules) but "
                f"landmarks.regions has {r}: {names}. Raise attention.num_maps to {r} or use fewer regions"
            )
        return [m % r for m in range(num_maps)]

    def forward(
        self,
        maps: torch.Tensor,
        mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        region_masks: torch.Tensor | None = None,
        blend_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mask = as_spatial(mask)  # (B, H, W)
        b, size = maps.shape[0], mask.shape[-2:]
        # targets (B, K, H, W) against maps (B, K, H, W): K = 1 (the head average) or M (per head)
        if self.form == "per_head":
            if region_masks is None:
                raise ValueError(
                    "loss.landmark.form=per_head needs per-region masks: the batch has no 'region_masks' "
                    "(data.region_masks, set from loss.landmark.regions by loss=per_head)"
                )
            idx = self.head_regions(maps.shape[1], region_masks.shape[1])
            targets = region_masks[:, idx].float()
            a = resize_maps(maps, size)
            fn = FORM_FNS[self.base]
        else:
            targets = mask[:, None].float()
            a = mean_attention(maps, size)[:, None]
            fn = FORM_FNS[self.form]
        use = torch.ones(b, dtype=torch.bool, device=maps.device)  # the samples the loss applies to
        if self.apply_to == "real" and labels is not None:
            use = labels == 0
        if self.apply_to == "fake_blend":
            if labels is None or blend_mask is None:
                raise ValueError(
                    "loss.landmark.apply_to=fake_blend needs the labels and the fakes' blend masks: the "
                    "batch has no 'blend_mask' (data.landmark_apply_to follows loss.landmark.apply_to)"
                )
            blend = as_spatial(blend_mask).float()
            blend = blend / blend.flatten(1).amax(1).clamp_min(self.eps)[:, None, None]
            fake = (labels == 1)[:, None, None, None]
            targets = torch.where(fake, blend[:, None].expand_as(targets), targets)
        k = targets.shape[1]
        extra = {"scale": self.simple_scale} if fn is simple_form else {}
        values = fn(a.flatten(0, 1), targets.flatten(0, 1), self.eps, **extra).view(b, k)  # (B, K)
        has = targets.flatten(2).sum(2) > 0  # (B, K): which (sample, head) pairs have a target
        per = torch.where(has, values, 0.0).sum(1) / has.sum(1).clamp_min(1)  # (B,)
        valid = use & has.any(1)
        self.last_empty = int((use & ~has.any(1)).sum())
        if not valid.any():
            return per.sum() * 0.0  # keeps the graph, contributes nothing
        return per[valid].mean()
