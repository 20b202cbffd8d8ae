"""Scoring one split of one data set with a loaded model, and the metrics of the scores: the path
``lmguide.eval`` (one split) and ``lmguide.crosseval`` (one checkpoint on several data sets) share, so
that both report the same numbers for the same faces.

* :func:`build_datamodule`: the data of a run's config, prepared (the landmark cache built or reused)
  and set up for scoring.
* :func:`split_metrics`: per sample (frame or clip) and per video, AUC, AP, EER (threshold-free) and
  ACC, balanced ACC, precision, recall, F1 at each given threshold; the AUC's 95 % bootstrap interval
  resampling people (a video and its fakes together); the attention-alignment shares.
* :func:`manifest_counts`: what the prepare manifest recorded for the split's frames, faceless ones
  included: a frame without a usable face is never scored, and is counted here instead of vanishing.
"""

from __future__ import annotations

from collections import Counter

#: threshold-free metrics of :func:`lmguide.metrics.binary_report`, reported once per level
THRESHOLD_FREE = ("auc", "ap", "eer", "undefined")


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


def split_metrics(
    res: dict, unit: str, thresholds: dict[str, float], video_agg: str = "mean", seed: int = 0
) -> dict:
    """The metrics of one scored split (:func:`lmguide.metrics.score_split`'s ``res``).

    ``thresholds``: key prefix -> P(fake) threshold, e.g. ``{"": 0.5, "cal_": 0.41}``; the threshold
    metrics are reported under ``<level>/<prefix><name>`` for each, the threshold-free ones (AUC, AP,
    EER) once under ``<level>/<name>``. Levels: ``unit`` (``frame`` or ``clip``) and ``video``, whose
    score is the ``video_agg`` (mean or max) of its samples' P(fake). Also ``n_<unit>s``, ``n_videos``,
    ``<level>/auc_ci95_lo``/``_hi`` and ``<level>/people`` (the bootstrap's clusters, resampled whole),
    and the attention metrics per frame."""
    from lmguide.alignment import attention_summary
    from lmguide.metrics import aggregate_videos, binary_report, bootstrap_auc

    metrics: dict = {f"n_{unit}s": len(res["label"])}
    person = dict(zip(res["video"], res["person"], strict=True))
    for level in (unit, "video"):
        if level == unit:
            scores, labels, clusters = res["prob"], res["label"], res["person"]
        else:
            ids, scores, labels = aggregate_videos(res["prob"], res["label"], res["video"], video_agg)
            metrics["n_videos"] = len(ids)
            clusters = [person[v] for v in ids]
        first = True
        for name, thr in thresholds.items():
            for k, v in binary_report(scores, labels, thr).items():
                if k in THRESHOLD_FREE:
                    if first:
                        metrics[f"{level}/{k}"] = v
                    continue
                metrics[f"{level}/{name}{k}"] = v
            first = False
        # 95 % bootstrap interval of the AUC, resampling people (a video and its fakes together)
        boot = bootstrap_auc(scores, labels, clusters, seed=seed)
        metrics[f"{level}/auc_ci95_lo"], metrics[f"{level}/auc_ci95_hi"] = boot["lo"], boot["hi"]
        metrics[f"{level}/people"] = boot["clusters"]
    metrics["frame/attn_in_lm"] = float(res["attn_in_lm"].mean())
    metrics["frame/pointing_game"] = float(res["pointing"].mean())
    metrics.update({f"frame/{k}": v for k, v in attention_summary(res).items()})  # per region, map_corr
    return metrics


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
