"""Detection metrics (torchmetrics) at frame and video level, attention-alignment metrics, and the
scoring of a split (the statistics of an AUC: :mod:`lmguide.evaluation.auc`)."""

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
    BinaryRecall,
)

from lmguide.evaluation.alignment import (
    attention_in_mask,
    attention_in_regions,
    map_correlation,
    pointing_hit,
)
from lmguide.evaluation.auc import NEEDS_BOTH_CLASSES, undefined_reason


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


def training_metrics(prefix: str = "train/") -> MetricCollection:
    """AUC, precision, recall, F1 of the training batches' P(fake) over an epoch (the raw view, the
    margin-free logits), to set against the val split's for over-fitting."""
    return MetricCollection(
        {
            "auc": BinaryAUROC(),
            "precision": BinaryPrecision(),
            "recall": BinaryRecall(),
            "f1": BinaryF1Score(),
        },
        prefix=prefix,
    )


class VideoScores(Metric):
    """Collects frame scores with their video index; ``compute`` returns one mean score and label per
    video, i.e. video-level predictions ready for :func:`detection_metrics`."""

    full_state_update = False
    scores: list[torch.Tensor]  # per update, (B,): the states torchmetrics keeps (cat across ranks)
    labels: list[torch.Tensor]
    videos: list[torch.Tensor]

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


def binary_report(scores: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> dict:
    """AUC, AP, EER (threshold-free) and ACC, balanced ACC, precision, recall, F1 at ``threshold``.

    A score counts as fake at ``score >= threshold``, the rule of predict's verdicts and of eval's
    per-frame CSV (torchmetrics alone would count ``score > threshold``: the calibrated threshold is one
    of the scores, so that face would be scored on the other side of it). On labels of one class AUC, AP
    and EER are None and ``undefined`` says why."""
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
    reason = undefined_reason(y)
    pred = (s >= threshold).long()  # labels, which torchmetrics takes as they are
    recall = binary_recall(pred, y)
    spec = binary_specificity(pred, y)
    out = {
        "auc": binary_auroc(s, y),
        "ap": binary_average_precision(s, y),
        "eer": binary_eer(s, y),
        "acc": binary_accuracy(pred, y),
        "balanced_acc": (recall + spec) / 2,
        "precision": binary_precision(pred, y),
        "recall": recall,
        "f1": binary_f1_score(pred, y),
    }
    res: dict[str, float | str | None] = {k: float(v) for k, v in out.items()}
    if reason:  # torchmetrics returns numbers (AUC 0, EER 1) for a one-class split: they mean nothing
        res.update({k: None for k in NEEDS_BOTH_CLASSES}, undefined=reason)
    return res


#: autocast dtypes of Lightning's mixed precision settings (others score in the weights' own dtype)
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@torch.no_grad()
def score_split(
    model,
    dataset,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    precision: str | None = None,
) -> dict:
    """P(fake), labels, video names, people, item keys and attention metrics for every item of
    ``dataset``. Clips (a
    :class:`~lmguide.data.clips.ClipDataset`): P(fake), label and video per clip, the attention
    metrics per frame of each clip (the model's maps are per frame).

    ``device``: where the model scores (None: where its weights are), ``num_workers`` loader workers
    (the order stays the dataset's), ``precision``: a Lightning precision (``bf16-mixed``,
    ``16-mixed`` autocast the forward); the results come back on the CPU, in float32."""
    import contextlib

    from torch.utils.data import DataLoader

    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(dev)
    dtype = AUTOCAST.get(str(precision))
    autocast = torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    regions = tuple(getattr(dataset, "regions", ()))
    probs, labels, videos, attn, hits, corr, per_region = [], [], [], [], [], [], []
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=dev.type == "cuda"
    )
    for batch in loader:
        with autocast:
            out = model(batch["image"].to(dev, non_blocking=True))
        logits, maps = out.logits.float().cpu(), out.maps.float().cpu()
        mask = batch["mask"]
        mask = mask.flatten(0, 1) if mask.dim() == 5 else mask  # clips (B, T, 1, S, S): per frame
        probs.append(logits.softmax(-1)[:, 1])
        labels.append(batch["label"])
        videos += [dataset.video_names[i] for i in batch["video"].tolist()]
        attn.append(attention_in_mask(maps, mask))
        hits.append(pointing_hit(maps, mask))
        corr.append(map_correlation(maps))
        if regions:
            rm = batch["region_masks"]
            per_region.append(attention_in_regions(maps, rm.flatten(0, 1) if rm.dim() == 5 else rm))
    res = {
        "prob": torch.cat(probs),
        "label": torch.cat(labels),
        "video": videos,
        "person": [dataset.person_of[v] for v in videos],
        "key": list(dataset.item_keys),  # the loader keeps the dataset's order
        "source": list(getattr(dataset, "item_sources", None) or [""] * len(videos)),
        "kind": list(dataset.item_kinds),  # real, fake, self-blend, swap
        "attn_in_lm": torch.cat(attn),
        "pointing": torch.cat(hits),
        "map_corr": torch.cat(corr),
    }
    if regions:  # (N, R) -> one (N,) share per region: attn_eyes, attn_nose, ...
        shares = torch.cat(per_region)
        res.update({f"attn_{r}": shares[:, j] for j, r in enumerate(regions)})
    return res
