"""Center loss on the attention-pooled features (Wen et al., ECCV 2016; as used by WS-DAN).

One center per class, kept as a buffer (saved in checkpoints) and moved towards the batch mean of its
class by a moving average with rate ``beta``; the loss is the mean squared distance to the own center.
"""

from __future__ import annotations

import torch
from torch import nn


class CenterLoss(nn.Module):
    def __init__(self, num_features: int, num_classes: int = 2, beta: float = 0.05):
        super().__init__()
        if not 0 < beta <= 1:
            raise ValueError(f"loss.center_beta must be in (0, 1], got {beta}")
        self.beta = beta
        self.register_buffer("centers", torch.zeros(num_classes, num_features))

    def forward(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = (feats - self.centers[labels]).pow(2).sum(1).mean()
        if self.training:
            self.update(feats.detach(), labels)
        return loss

    @torch.no_grad()
    def update(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """c_y <- c_y + beta * (mean of the batch's class-y features - c_y), for classes present."""
        k = self.centers.shape[0]
        onehot = torch.nn.functional.one_hot(labels, k).to(feats.dtype)  # (B, K)
        counts = onehot.sum(0)  # (K,)
        means = onehot.T @ feats / counts.clamp_min(1)[:, None]  # (K, D)
        present = (counts > 0)[:, None]
        self.centers.copy_(
            torch.where(present, self.centers + self.beta * (means - self.centers), self.centers)
        )
