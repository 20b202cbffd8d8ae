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


def aggregate_videos(scores: torch.Tensor, labels: torch.Tensor, videos: list[str], agg: str = "mean"):
    """One score per video id: the mean or max of its frames' scores.

    Returns ``(names, scores, labels)`` sorted by name. Ids are compared as whole strings, so
    ``Deepfakes/000_003`` and ``Face2Face/000_003`` stay two videos. A video whose frames carry
    different labels is an error (it would mean the index mixed two sources under one id).
    """
    if agg not in ("mean", "max"):
        raise ValueError(f"video aggregation must be 'mean' or 'max', got {agg!r}")
    names = sorted(set(videos))
    index = {v: i for i, v in enumerate(names)}
    inv = torch.tensor([index[v] for v in videos])
    n = len(names)
    s = scores.detach().float().cpu()
    if agg == "mean":
        out = torch.zeros(n).index_add_(0, inv, s) / torch.bincount(inv, minlength=n).float()
    else:
        out = torch.full((n,), -torch.inf).scatter_reduce_(0, inv, s, reduce="amax")
    y = labels.detach().cpu().long()
    lab_min = torch.full((n,), 2, dtype=torch.long).scatter_reduce_(0, inv, y, reduce="amin")
    lab_max = torch.full((n,), -1, dtype=torch.long).scatter_reduce_(0, inv, y, reduce="amax")
    if (lab_min != lab_max).any():
        bad = [names[i] for i in torch.nonzero(lab_min != lab_max).ravel().tolist()]
        raise ValueError(f"videos with frames of both labels: {bad[:5]}")
    return names, out, lab_max


def calibrate_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The threshold that maximises balanced accuracy (Youden's J = TPR - FPR) on these scores."""
    from torchmetrics.functional.classification import binary_roc

    fpr, tpr, thr = binary_roc(scores.float(), labels.long())
    j = tpr - fpr
    best = int(torch.argmax(j))
    return float(thr[best].clamp(0.0, 1.0))


def binary_report(scores: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """AUC, AP, EER (threshold-free) and ACC, balanced ACC, precision, recall, F1 at ``threshold``."""
    from torchmetrics.functional.classification import (
        binary_accuracy,
        binary_auroc,
        binary_average_precision,
        binary_eer,
        binary_f1_score,
        binary_precision,
        binary_recall,
        binary_specificity,
    )

    s, y = scores.float(), labels.long()
    recall = binary_recall(s, y, threshold=threshold)
    spec = binary_specificity(s, y, threshold=threshold)
    out = {
        "auc": binary_auroc(s, y),
        "ap": binary_average_precision(s, y),
        "eer": binary_eer(s, y),
        "acc": binary_accuracy(s, y, threshold=threshold),
        "balanced_acc": (recall + spec) / 2,
        "precision": binary_precision(s, y, threshold=threshold),
        "recall": recall,
        "f1": binary_f1_score(s, y, threshold=threshold),
    }
    return {k: float(v) for k, v in out.items()}
