"""The composite objective: ``w_raw·CE_raw + w_crop·CE_crop + w_drop·CE_drop + w_center·center + λ·landmark``.

``CE_crop`` / ``CE_drop`` are the cross-entropies of the WS-DAN attention-crop and attention-drop views
(Hu et al., "See Better Before Looking Closer", 2019; logged as ``ce_crop`` / ``ce_drop``), weighted by
``w_crop`` / ``w_drop``. Defaults (1/3, 1, 2/3, 1): the raw view counts a third and the drop view,
whose images lose their most attended part, less than the crop view; ``hparams_search=optuna`` tunes
the view weights. A term whose weight is 0 is not computed. The loss returns ``(total, parts)``;
every part is logged as ``train/loss/<name>``.

What flows in: the model's output (``logits`` (B, 2), ``maps`` (B, M, h, w); a clip model's maps are
per frame, (B*T, M, h, w)), the batch as the data module gives it (``label`` (B,), ``mask`` (B, 1, S, S)
or per frame (B, T, 1, S, S), optional ``region_masks`` / ``blend_mask`` shaped like ``mask``) and the
logits of the two WS-DAN views (:class:`Views`).

* λ warm-up: with ``lambda_warmup_steps = N > 0`` the landmark weight at training step ``t`` is
  ``λ·min(1, t / N)``: 0 at the first step, ``λ/2`` at ``N/2``, ``λ`` from step ``N`` on (the module
  passes ``global_step`` and logs the value as ``train/lambda_lm``). The landmark term is still
  computed (and logged) while its weight is 0.
* ``focal_gamma = γ > 0`` replaces each cross-entropy (raw, crop view, drop view) by the focal loss
  ``-α_y (1 - p_y)^γ log p_y`` with the class weights as ``α``, averaged like weighted CE
  (``Σ α_y ℓ / Σ α_y``); ``γ = 0`` is plain (weighted) cross-entropy.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from lmguide.losses.landmark import LandmarkLoss
from lmguide.runs.errors import require_number


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


class ModelOutput(Protocol):
    """What the loss reads of the model's output (:class:`lmguide.models.module.Output`)."""

    logits: torch.Tensor  # (B, 2)
    maps: torch.Tensor  # (B, M, h, w); clips: (B*T, M, h, w)


class Views(NamedTuple):
    """The logits of the WS-DAN views of a batch: attention crop and attention drop, (B, 2) each."""

    crop: torch.Tensor
    drop: torch.Tensor


def per_frame(t: torch.Tensor) -> torch.Tensor:
    """Clips' per-frame tensors (B, T, ...) as frames (B*T, ...); frame batches unchanged."""
    return t.flatten(0, 1) if t.dim() == 5 else t


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
        out: ModelOutput,
        batch: dict[str, torch.Tensor],
        views: Views | None = None,
        *,
        center: torch.Tensor | None = None,
        class_weight: torch.Tensor | None = None,
        step: int | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, parts)`` of a batch. ``center``: the center-loss value of the batch's features;
        ``class_weight`` (2,): the CE class weights; ``step``: the training step (λ warm-up). A clip
        batch's masks are per frame, and so is the label the landmark term sees."""
        labels, mask = batch["label"], batch["mask"]
        frame_labels = labels.repeat_interleave(mask.shape[1]) if mask.dim() == 5 else labels
        extra = {k: per_frame(batch[k]) for k in ("region_masks", "blend_mask") if k in batch}
        parts: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []

        def add(name: str, weight: float, fn, effective: float | None = None) -> None:
            if weight > 0:
                parts[name] = fn()
                weighted.append((weight if effective is None else effective) * parts[name])

        add("ce_raw", self.w_raw, lambda: self.ce(out.logits, labels, class_weight))
        if views is not None:
            add("ce_crop", self.w_crop, lambda: self.ce(views.crop, labels, class_weight))
            add("ce_drop", self.w_drop, lambda: self.ce(views.drop, labels, class_weight))
        if center is not None:
            add("center", self.w_center, lambda: center)
        add(
            "landmark",
            self.lambda_lm,
            lambda: self.landmark(out.maps, per_frame(mask), frame_labels, **extra),
            effective=self.lambda_at(step),
        )
        total = torch.stack(weighted).sum()
        parts["total"] = total
        return total, parts
