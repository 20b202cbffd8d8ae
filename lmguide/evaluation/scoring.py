"""The one evaluation path: scoring one split of one data set with a loaded model, the statistics of
the scores and the cells they are printed in. ``lmguide.train`` (its end-of-run scoring of val, test,
the swaps and the held-out sources), ``lmguide.eval`` (one split) and ``lmguide.crosseval`` (one
checkpoint on several data sets) all go through it, so that the same faces give the same numbers
under the same keys.

**One key scheme**, the LightningModule's (``val/auc``, ``test/video_auc``): ``<set>/<statistic>``,
where ``<set>`` is the split (``val``, ``test``, ``swaps``, ...) or crosseval's data set, and the
statistic is

* ``auc``, ``ap``, ``eer`` (threshold-free) and ``acc``, ``balanced_acc``, ``precision``, ``recall``,
  ``f1`` at 0.5, per scored sample (a frame, or a clip for a clip model: ``unit``);
* ``cal_<name>`` for those at the **threshold calibrated on val**: the one the LightningModule
  calibrated and the checkpoint stores (``threshold_val``), read from the model, never recomputed;
* ``video_<name>`` and ``video_cal_<name>`` for the same per video (its score: the ``video_agg``, mean
  or max, of its samples' P(fake));
* ``auc_ci95_lo``/``_hi``, ``people`` (and ``video_…``): the AUC's 95 % bootstrap interval resampling
  people (a video and its fakes together), and how many there are; ``undefined``/``video_undefined``:
  why AUC, AP and EER are None (one class only);
* ``n_<unit>s``, ``n_videos``; the attention per frame: ``attn_in_lm``, ``pointing_game``,
  ``attn_<region>``, ``map_corr``.

:func:`split_metrics` gives a split's statistics without its ``<set>/`` (a crosseval row holds them
so), :func:`prefixed` puts it on. :func:`format_metric` is the one summary cell.
"""

from __future__ import annotations

import logging
from collections import Counter

from lmguide.runs.errors import ConfigError

log = logging.getLogger(__name__)

#: threshold-free metrics of :func:`lmguide.evaluation.metrics.binary_report`, reported once per level
THRESHOLD_FREE = ("auc", "ap", "eer", "undefined")
#: the prefix of the statistics at the val-calibrated threshold, and of the per-video ones
CAL, VIDEO = "cal_", "video_"
#: ``split_statistics(threshold=CALIBRATE)``: no model to read a threshold from; calibrate on val here
CALIBRATE = "calibrate on val"


def build_datamodule(run_cfg, splits=None):
    """``run_cfg.data`` instantiated, its cache prepared (built, resumed or reused) and set up: every
    split, or only ``splits`` (a cross-dataset test set may have no train or val split)."""
    import hydra

    dm = hydra.utils.instantiate(run_cfg.data)
    dm.prepare_data()
    if splits is None:
        dm.setup("test")
    else:
        dm.setup_scoring(splits)
    return dm


def unit_of(model) -> str:
    """What one scored sample of ``model`` is: ``clip`` for a clip (video) model, else ``frame``."""
    return "clip" if getattr(model, "clip_frames", None) else "frame"


def calibrate_on(val: dict | None) -> float | None:
    """The threshold maximising balanced accuracy on a scored val split, with a log line saying it
    was calibrated here; None without a val split of both classes."""
    from lmguide.evaluation.auc import undefined_reason
    from lmguide.evaluation.metrics import calibrate_threshold

    if val is None or undefined_reason(val["label"]):
        return None
    threshold = calibrate_threshold(val["prob"], val["label"])
    log.info("threshold %.4f: calibrated here on the %d scored val samples", threshold, len(val["label"]))
    return threshold


def model_threshold(model, val: dict | None = None) -> tuple[float | None, str]:
    """``(threshold, where it comes from)`` for the ``cal_`` statistics: the one the model stores
    (calibrated on val by the LightningModule, kept in its checkpoint), read as it is. A model without
    one gets one calibrated on ``val`` (a scored val split) when given, and a warning says so; else
    None (no ``cal_`` statistics), and a warning says that."""
    from lmguide.training.checkpoint import stored_threshold

    value, note = stored_threshold(model)
    if value is not None:
        return value, note
    value = calibrate_on(val)
    if value is None:
        log.warning("%s: no statistics at a calibrated threshold (cal_*)", note)
        return None, note
    log.warning("%s: calibrated one on the val split here instead (%.4f)", note, value)
    return value, f"calibrated on the val split by this command ({note})"


def split_metrics(
    res: dict, unit: str, threshold: float | None, video_agg: str = "mean", seed: int = 0
) -> dict:
    """The statistics of one scored split (:func:`lmguide.evaluation.metrics.score_split`'s ``res``), keyed as
    the module docstring says, without the split: at 0.5, and at ``threshold`` (the val-calibrated one,
    ``cal_``; none when None), per sample of ``unit`` (``frame`` or ``clip``) and per video
    (``video_``, its score the ``video_agg`` of its samples'); the attention statistics per frame."""
    from lmguide.evaluation.alignment import attention_summary
    from lmguide.evaluation.auc import bootstrap_auc
    from lmguide.evaluation.metrics import aggregate_videos, binary_report

    person = dict(zip(res["video"], res["person"], strict=True))
    ids, video_scores, video_labels = aggregate_videos(res["prob"], res["label"], res["video"], video_agg)
    metrics: dict = {f"n_{unit}s": len(res["label"]), "n_videos": len(ids)}
    levels = {
        "": (res["prob"], res["label"], res["person"]),
        VIDEO: (video_scores, video_labels, [person[v] for v in ids]),
    }
    at = {"": 0.5} if threshold is None else {"": 0.5, CAL: threshold}
    for level, (scores, labels, clusters) in levels.items():
        for name, thr in at.items():
            for k, v in binary_report(scores, labels, thr).items():
                if k not in THRESHOLD_FREE:
                    metrics[f"{level}{name}{k}"] = v
                elif not name and (k != "undefined" or v):
                    metrics[f"{level}{k}"] = v
        # 95 % bootstrap interval of the AUC, resampling people (a video and its fakes together)
        boot = bootstrap_auc(scores, labels, clusters, seed=seed)
        metrics[f"{level}auc_ci95_lo"], metrics[f"{level}auc_ci95_hi"] = boot["lo"], boot["hi"]
        metrics[f"{level}people"] = boot["clusters"]
    metrics["attn_in_lm"] = float(res["attn_in_lm"].mean())
    if "pointing" in res:
        metrics["pointing_game"] = float(res["pointing"].mean())
    metrics.update(attention_summary(res))  # per region, map_corr
    return metrics


def prefixed(split: str, stats: dict) -> dict:
    """``stats`` of one split (:func:`split_metrics`, :func:`manifest_counts`) as ``<split>/<name>``."""
    return {f"{split}/{k}": v for k, v in stats.items()}


def format_metric(metrics: dict, split: str, key: str) -> str:
    """One summary cell, of train's table and of eval's: the value of ``<split>/<key>`` with its
    bootstrap interval where it has one (AUCs), ``undefined`` (None) or ``-`` (not reported)."""
    full = f"{split}/{key}"
    if full not in metrics:
        return "-"
    v = metrics[full]
    if v is None:
        return "undefined"
    lo, hi = metrics.get(f"{full}_ci95_lo"), metrics.get(f"{full}_ci95_hi")
    return f"{v:.4f}" + ("" if lo is None else f" [{lo:.2f}, {hi:.2f}]")


def threshold_line(metrics: dict, note: str = "") -> str:
    """What the thresholded rows of a summary mean: ``acc``, ``f1`` (and precision, recall) at 0.5, and
    ``cal_*`` at the stored threshold, with where it comes from."""
    plain = "acc, f1: fake at P(fake) >= 0.5; "
    thr = metrics.get("threshold_val")
    if thr is None:
        return f"{plain}cal_*: not reported, no threshold calibrated on val{': ' + note if note else ''}"
    where = note or "calibrated on val, stored in the checkpoint"
    return (
        f"{plain}cal_*: fake at P(fake) >= {thr:.4f}, the threshold {where}; predict gives its verdicts at it"
    )


def manifest_counts(dm, split: str) -> dict:
    """What the prepare manifest recorded for ``split``'s source frames: ``manifest_rows`` (a row per
    frame and face, one per faceless frame), ``n_no_face`` (frames where the detector found no face),
    ``n_unusable`` (rows of any status but ``ok``: no face, too small, low confidence, no landmarks,
    undecodable), ``n_videos_without_face`` (videos or images of the split without one usable face:
    absent from the video metrics) and ``statuses`` (rows per status)."""
    rows = [r for r in dm.index.rows if r["split"] == split]
    statuses = Counter(r["status"] for r in rows)
    usable = {r["video_id"] for r in rows if r["status"] == "ok"}
    return {
        "manifest_rows": len(rows),
        "n_no_face": statuses.get("no_face", 0),
        "n_unusable": len(rows) - statuses.get("ok", 0),
        "n_videos_without_face": len({r["video_id"] for r in rows} - usable),
        "statuses": dict(sorted(statuses.items())),
    }


#: the precisions a scoring command takes (null / 32-true: fp32)
PRECISIONS = (None, "32-true", "bf16-mixed", "16-mixed")


def scoring_device(device, precision) -> dict:
    """``device=`` and ``precision=`` of eval and crosseval as
    :func:`lmguide.evaluation.metrics.score_split`'s keywords: ``auto`` is the first CUDA GPU when there is
    one, else the CPU; a device that is not there, or a precision outside :data:`PRECISIONS`, is a one-line
    error naming the key (:func:`lmguide.runs.cli.device_choice`, predict's too)."""
    from lmguide.runs.cli import device_choice

    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision={precision!r} is not a choice: use null (fp32), 32-true, bf16-mixed or 16-mixed"
        )
    return {"device": device_choice(device), "precision": precision}
