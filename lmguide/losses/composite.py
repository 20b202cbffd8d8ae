"""The composite objective: ``w_raw·CE_raw + w_crop·CE_aux + w_drop·CE_aug + w_center·center + λ·landmark``.

``CE_aux`` / ``CE_aug`` are the cross-entropies of the WS-DAN attention-crop and attention-drop views
(Hu et al., "See Better Before Looking Closer", 2019; logged as ``ce_aux`` / ``ce_aug``), weighted by
``w_crop`` / ``w_drop``. Defaults (1/3, 1, 2/3, 1): the raw view counts a third and the drop view,
whose images lose their most attended part, less than the crop view; ``hparams_search=optuna`` tunes
the view weights. A term whose weight is 0 is not computed. The loss returns ``(total, parts)``;
every part is logged as ``train/loss/<name>``.

* λ warm-up: with ``lambda_warmup_steps = N > 0`` the landmark weight at training step ``t`` is
  ``λ·min(1, t / N)``: 0 at the first step, ``λ/2`` at ``N/2``, ``λ`` from step ``N`` on (the module
  passes ``global_step`` and logs the value as ``train/lambda_lm``). The landmark term is still
  computed (and logged) while its weight is 0.
* ``focal_gamma = γ > 0`` replaces each cross-entropy (raw, crop view, drop view) by the focal loss
  ``-α_y (1 - p_y)^γ log p_y`` with the class weights as ``α``, averaged like weighted CE
  (``Σ α_y ℓ / Σ α_y``); ``γ = 0`` is plain (weighted) cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmguide.errors import require_number
from lmguide.losses.landmark import LandmarkLoss


def focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, gamma: float, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean focal loss ``-α_y (1 - p_y)^γ log p_y`` of (B, C) logits; ``weight`` (C,) gives ``α``, and
    the mean is then weighted like :func:`torch.nn.functional.cross_entropy`'s. γ = 0 is that CE."""
    logp = F.log_softmax(logits.float(), -1).gather(1, labels[:, None]).squeeze(1)  # log p_y, (B,)
    # 1 - p_y from expm1 (exact near p_y = 1); the floor keeps the gradient of x^γ (γ < 1) finite at 0
    one_minus_p = (-torch.expm1(logp)).clamp_min(1e-12)
    per = -one_minus_p.pow(gamma) * logp
    if weight is None:
        return per.mean()
    w = weight.to(per.dtype)[labels]
    return (w * per).sum() / w.sum()


class CompositeLoss(nn.Module):
    def __init__(
        self,
        landmark: LandmarkLoss,
        lambda_lm: float = 1.0,
        w_raw: float = 1 / 3,
        w_crop: float = 1.0,
        w_drop: float = 2 / 3,
        w_center: float = 1.0,
        lambda_warmup_steps: int = 0,
        focal_gamma: float = 0.0,
    ):
        super().__init__()
        self.landmark = landmark
        self.lambda_lm = require_number("loss.lambda_lm", lambda_lm, low=0)
        self.w_raw = require_number("loss.w_raw", w_raw, low=0)
        self.w_crop = require_number("loss.w_crop", w_crop, low=0)
        self.w_drop = require_number("loss.w_drop", w_drop, low=0)
        self.w_center = require_number("loss.w_center", w_center, low=0)
        self.focal_gamma = require_number("loss.focal_gamma", focal_gamma, low=0)
        self.lambda_warmup_steps = require_number(
            "loss.lambda_warmup_steps", lambda_warmup_steps, low=0, integer=True
        )

    @property
    def needs_views(self) -> bool:
        return self.w_crop > 0 or self.w_drop > 0

    def lambda_at(self, step: int | None) -> float:
        """The landmark weight at training step ``step``: ``λ·min(1, step / N)``; ``λ`` without warm-up
        or without a step."""
        n = self.lambda_warmup_steps
        if n == 0 or step is None:
            return float(self.lambda_lm)
        return float(self.lambda_lm) * min(1.0, max(int(step), 0) / n)

    def ce(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy, or the focal loss when ``focal_gamma > 0``."""
        if self.focal_gamma == 0:
            return F.cross_entropy(logits, labels, weight=weight)
        return focal_loss(logits, labels, self.focal_gamma, weight)

    def forward(
        self,
        *,
        logits: torch.Tensor,
        labels: torch.Tensor,
        maps: torch.Tensor,
        mask: torch.Tensor,
        center: torch.Tensor | None = None,
        logits_aux: torch.Tensor | None = None,
        logits_aug: torch.Tensor | None = None,
        class_weight: torch.Tensor | None = None,
        frame_labels: torch.Tensor | None = None,
        region_masks: torch.Tensor | None = None,
        blend_mask: torch.Tensor | None = None,
        step: int | None = None,
    ):
        """``frame_labels``: the label of each attention-map set when they are per frame of a clip
        (``maps`` (B*T, ...), ``labels`` (B,)); the landmark term uses them instead of ``labels``.
        ``region_masks`` / ``blend_mask``: the per-region masks (``per_head``) and the fakes' blend
        masks (``apply_to=fake_blend``), per map set like ``mask``. ``step``: the training step (λ
        warm-up)."""
        parts: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []

        def add(name: str, weight: float, fn, effective: float | None = None) -> None:
            if weight > 0:
                parts[name] = fn()
                weighted.append((weight if effective is None else effective) * parts[name])

        add("ce_raw", self.w_raw, lambda: self.ce(logits, labels, class_weight))
        if logits_aux is not None:
            add("ce_aux", self.w_crop, lambda: self.ce(logits_aux, labels, class_weight))
        if logits_aug is not None:
            add("ce_aug", self.w_drop, lambda: self.ce(logits_aug, labels, class_weight))
        if center is not None:
            add("center", self.w_center, lambda: center)
        lm_labels = labels if frame_labels is None else frame_labels
        add(
            "landmark",
            self.lambda_lm,
            lambda: self.landmark(maps, mask, lm_labels, region_masks=region_masks, blend_mask=blend_mask),
            effective=self.lambda_at(step),
        )
        total = torch.stack(weighted).sum()
        parts["total"] = total
        return total, parts
