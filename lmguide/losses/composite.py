"""The composite objective: ``w_raw·CE_raw + w_aux·CE_aux + w_aug·CE_aug + w_center·center + λ·landmark``.

Defaults are the seed's weights (1/3, 1, 2/3, 1). A term whose weight is 0 is not computed. The loss
returns ``(total, parts)``; every part is logged as ``train/loss/<name>``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmguide.losses.landmark import LandmarkLoss


class CompositeLoss(nn.Module):
    def __init__(
        self,
        landmark: LandmarkLoss,
        lambda_lm: float = 1.0,
        w_raw: float = 1 / 3,
        w_aux: float = 1.0,
        w_aug: float = 2 / 3,
        w_center: float = 1.0,
    ):
        super().__init__()
        for k, v in dict(
            lambda_lm=lambda_lm, w_raw=w_raw, w_aux=w_aux, w_aug=w_aug, w_center=w_center
        ).items():
            if v < 0:
                raise ValueError(f"loss.{k} must be >= 0, got {v}")
        self.landmark = landmark
        self.lambda_lm, self.w_raw, self.w_aux, self.w_aug, self.w_center = (
            lambda_lm,
            w_raw,
            w_aux,
            w_aug,
            w_center,
        )

    @property
    def needs_views(self) -> bool:
        return self.w_aux > 0 or self.w_aug > 0

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
    ):
        """``frame_labels``: the label of each attention-map set when they are per frame of a clip
        (``maps`` (B*T, ...), ``labels`` (B,)); the landmark term uses them instead of ``labels``."""
        parts: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []

        def add(name: str, weight: float, fn) -> None:
            if weight > 0:
                parts[name] = fn()
                weighted.append(weight * parts[name])

        add("ce_raw", self.w_raw, lambda: F.cross_entropy(logits, labels, weight=class_weight))
        if logits_aux is not None:
            add("ce_aux", self.w_aux, lambda: F.cross_entropy(logits_aux, labels, weight=class_weight))
        if logits_aug is not None:
            add("ce_aug", self.w_aug, lambda: F.cross_entropy(logits_aug, labels, weight=class_weight))
        if center is not None:
            add("center", self.w_center, lambda: center)
        lm_labels = labels if frame_labels is None else frame_labels
        add("landmark", self.lambda_lm, lambda: self.landmark(maps, mask, lm_labels))
        total = torch.stack(weighted).sum()
        parts["total"] = total
        return total, parts
