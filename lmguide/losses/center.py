"""Center loss on the attention-pooled features (Wen et al., ECCV 2016; as used by WS-DAN).

One center per class, kept as a buffer (saved in checkpoints) and moved towards the batch mean of its
class by a moving average with rate ``beta``; the loss is the mean squared distance to the own center.
Under distributed training the per-class sums and counts are all-reduced first, so the mean is over
the global batch and every rank applies the same update (the centers stay identical across ranks).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class CenterLoss(nn.Module):
    centers: torch.Tensor  # (num_classes, num_features), a buffer

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
        """c_y <- c_y + beta * (mean of the batch's class-y features - c_y), for classes present.

        With more than one process the class sums and counts of all ranks are summed before the mean
        (a collective: every rank must call this the same number of times, as training steps do)."""
        k = self.centers.shape[0]
        feats = feats.to(self.centers.dtype)  # in the centers' precision, also under mixed precision
        onehot = torch.nn.functional.one_hot(labels, k).to(feats.dtype)  # (B, K)
        with torch.autocast(device_type=feats.device.type, enabled=False):
            stats = torch.cat([onehot.T @ feats, onehot.sum(0)[:, None]], dim=1)  # (K, D+1): sums | counts
        if _world_size() > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        sums, counts = stats[:, :-1], stats[:, -1]
        means = sums / counts.clamp_min(1)[:, None]  # (K, D)
        # a batch with non-finite features (a skipped bad step) leaves the centers as they are
        present = (counts > 0)[:, None] & torch.isfinite(stats).all()
        self.centers.copy_(
            torch.where(present, self.centers + self.beta * (means - self.centers), self.centers)
        )
