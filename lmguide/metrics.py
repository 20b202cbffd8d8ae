"""Detection metrics (torchmetrics) at frame and video level, and attention-alignment metrics."""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryEER,
    BinaryF1Score,
    BinaryPrecision,
)


def detection_metrics(prefix: str) -> MetricCollection:
    """ACC, AUC, AP, precision, F1, EER on P(fake) scores; names ``<prefix>acc`` etc."""
    return MetricCollection(
        {
            "acc": BinaryAccuracy(),
            "auc": BinaryAUROC(),
            "ap": BinaryAveragePrecision(),
            "precision": BinaryPrecision(),
            "f1": BinaryF1Score(),
            "eer": BinaryEER(),
        },
        prefix=prefix,
    )


class VideoScores(Metric):
    """Collects frame scores with their video index; ``compute`` returns one mean score and label per
    video, i.e. video-level predictions ready for :func:`detection_metrics`."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("videos", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor, videos: torch.Tensor) -> None:
        self.scores.append(scores.detach().float())
        self.labels.append(labels.detach())
        self.videos.append(videos.detach())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        def cat(x):
            return torch.cat(x) if isinstance(x, list) else x

        s, y, v = cat(self.scores), cat(self.labels), cat(self.videos)
        uniq, inv = torch.unique(v, return_inverse=True)
        n = torch.zeros(len(uniq), device=s.device).index_add_(0, inv, torch.ones_like(s))
        mean = torch.zeros(len(uniq), device=s.device).index_add_(0, inv, s) / n
        label = torch.zeros(len(uniq), dtype=y.dtype, device=y.device).scatter_(0, inv, y)
        return mean, label
