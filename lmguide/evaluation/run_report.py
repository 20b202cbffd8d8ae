"""What a run reports after its fit: the scored sets (val, test, the swaps, the held-out sources),
their statistics (:mod:`lmguide.evaluation.scoring`'s, eval's: the same keys, cells and threshold), the test
curves and the one-screen summary."""

from __future__ import annotations

import logging
from pathlib import Path

from lmguide.evaluation.metrics import score_split
from lmguide.evaluation.predictions import NAME as PREDICTIONS
from lmguide.evaluation.scoring import (
    CALIBRATE,
    calibrate_on,
    format_metric,
    prefixed,
    split_metrics,
    threshold_line,
)
from lmguide.runs.loggers import log_images
from lmguide.viz.curves import plot_curves

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("auc", "acc", "cal_acc", "eer", "ap", "f1", "cal_f1", "video_auc", "attn_in_lm", "mask_area")
#: after attn_in_lm: the share on each landmark region (attn_<region>, as many as the mask has), then
#: how alike the attention maps are (map_corr); rows are named by their metrics.json key


#: the summary as printed, in the run dir
SUMMARY = "summary.txt"
#: the scored sets of a run: summary column -> datamodule dataset
SCORED_SETS = {
    "val": "val",
    "test": "test",
    "swaps": "test_swaps",
    "xsource": "xsource",
    "xsource_swaps": "xsource_swaps",
}
#: the sets whose statistics at 0.5 the LightningModule logs itself (the checkpoint was chosen by them)
MODULE_LOGGED = ("val", "test")
#: what it logs of them (:func:`lmguide.evaluation.metrics.detection_metrics`, per frame and per video): its
#: numbers stand in metrics.json unless a one-class set leaves them undefined (None)
_DETECTION = ("acc", "auc", "ap", "precision", "f1", "eer")
MODULE_KEYS = (*_DETECTION, *(f"video_{k}" for k in _DETECTION), "n_videos", "attn_in_lm")
#: summary tables: (title, {column: header}); the held-out sources get a table of their own
TABLES = (
    (
        "lmguide: run summary (best checkpoint)",
        {"val": "val", "test": "test", "swaps": "swaps (cross-method)"},
    ),
    (
        "faces from sources never seen in train or val (data.test_sources)",
        {"xsource": "xsource: self-blends", "xsource_swaps": "xsource: swaps"},
    ),
)


def score_splits(model, datamodule, trainer=None, on_split=None) -> dict[str, dict]:
    """P(fake), labels and video names of the tested weights on val, test and (when the data has face
    swaps) the swap test set, frame models only (``{}`` for a clip model).

    With ``trainer``: on its device, in its precision (bf16/16-mixed autocast), with the datamodule's
    loader workers (else where the weights are, in fp32, in this process). ``on_split(name, res)`` is
    called as each set is scored, so that what is scored is kept if a later set fails."""
    if getattr(model, "clip_frames", None):
        log.info(
            "test curves and bootstrap intervals are computed for frame models only (this is a clip model)"
        )
        return {}
    where = {}
    if trainer is not None:
        where = {
            "device": trainer.strategy.root_device,
            "num_workers": int(getattr(datamodule, "num_workers", 0)),
            "precision": str(trainer.precision),
        }
    was_training = model.training
    model.eval()
    out = {}
    for name, key in SCORED_SETS.items():
        ds = datamodule.datasets.get(key)
        if ds is not None and not (name == "swaps" and ds is datamodule.datasets.get("test")):
            res = score_split(model, ds, datamodule.eval_batch_size, **where)
            out[name] = res
            if on_split is not None:
                on_split(name, res)
    model.train(was_training)
    return out


def split_statistics(
    scored: dict[str, dict], seed: int = 0, threshold: float | str | None = CALIBRATE
) -> dict:
    """Per scored set, :func:`lmguide.evaluation.scoring.split_metrics` as ``<set>/<name>`` (bootstrap
    intervals resampling people, ``cal_*`` at ``threshold``, None with the reason where a one-class set leaves
    a metric undefined), less what the LightningModule logged itself for val and test (:data:`MODULE_KEYS`).

    ``threshold``: the one the tested model stores (``threshold_val``, calibrated on val: train passes
    it); None: no ``cal_*``; :data:`~lmguide.evaluation.scoring.CALIBRATE` (without a model): calibrated here
    on the scored val set, which the log says."""
    if threshold == CALIBRATE:
        threshold = calibrate_on(scored.get("val"))
    out: dict = {} if threshold is None else {"threshold_val": threshold}
    for name, res in scored.items():
        stats = split_metrics(res, "frame", threshold, seed=seed)
        if name in MODULE_LOGGED:
            stats = {k: v for k, v in stats.items() if k not in MODULE_KEYS or v is None}
        out.update(prefixed(name, stats))
    return out


def log_test_curves(res: dict | None, out_dir: Path, loggers: list, threshold: float | None = None) -> None:
    """ROC, PR and confusion matrix of the tested weights on the test split's frames (``res``:
    :func:`score_splits`'s test entry): PNGs under ``<run dir>/curves/``, also sent to W&B (images) and
    TensorBoard when they log. The confusion matrix is drawn at ``threshold`` (``threshold_val``, the
    one calibrated on val that the best checkpoint stores and predict uses) or, without one (a val
    split of one class), at 0.5; its title names the split, the threshold and where it comes from."""
    if res is None:
        return
    curves = out_dir / "curves"
    curves.mkdir(parents=True, exist_ok=True)
    if threshold is None:
        threshold, note = 0.5, "0.5: no threshold calibrated on val"
    else:
        note = "calibrated on val"
    paths = plot_curves(res["prob"], res["label"], threshold, curves, "test (frames)", note)
    captions = ["ROC", "PR", f"confusion @{threshold:.3f} ({note})"]
    log_images(loggers, {f"test/{p.stem}": p for p in paths}, group="test/curves", captions=captions)


def report_sources(scored: dict[str, dict], datamodule, threshold: float | None, out_dir: Path) -> dict:
    """P(fake) per source of the scored faces (``curves/sources.png`` and ``.json``, see
    :mod:`lmguide.viz.sources`) and, with ``data.test_sources``, the held-out sources' people and faces
    as ``xsource/sources`` (the summary's second table names them)."""
    from lmguide.data.sources import XSOURCE, source_counts
    from lmguide.viz.sources import plot_source_scores

    rows = getattr(datamodule, "rows", {}).get(XSOURCE) or []
    counts = source_counts(rows)
    if scored:
        plot_source_scores(scored, threshold, out_dir / "curves", held_out=tuple(counts))
    if not counts:
        return {}
    return {
        "xsource/sources": "; ".join(
            f"{s} ({c['people']} people, {c['faces']} faces)" for s, c in counts.items()
        )
    }


def summary_keys(metrics: dict) -> list[str]:
    """The summary's rows: :data:`SUMMARY_KEYS` with the per-region shares (``attn_<region>``, in the
    order the run wrote them) after ``attn_in_lm`` and ``map_corr`` last."""
    regions = list(dict.fromkeys(k.split("/", 1)[1] for k in metrics if "/attn_" in k))
    regions = [r for r in regions if r != "attn_in_lm" and not r.endswith(("_ci95_lo", "_ci95_hi"))]
    i = SUMMARY_KEYS.index("attn_in_lm") + 1
    return [*SUMMARY_KEYS[:i], *regions, *SUMMARY_KEYS[i:], "map_corr"]


def print_summary(metrics: dict[str, float], trainer, out_dir: Path, threshold_note: str = "") -> None:
    """The run's summary tables (:func:`~lmguide.evaluation.scoring.format_metric`'s cells), what ``cal_*`` is
    at, and where the run's files are; printed and written to ``<run dir>/summary.txt``."""
    from rich.console import Console
    from rich.table import Table

    tables, cols = [], []
    for title, headers in TABLES:
        shown = [c for c in headers if any(k.startswith(f"{c}/") for k in metrics)]
        if not shown:
            continue
        if metrics.get("xsource/sources") and "xsource" in headers:
            title += f": {metrics['xsource/sources']}"
        table = Table(title=title, show_header=True, header_style="bold")
        table.add_column("metric")
        for c in shown:
            table.add_column(headers[c], justify="right")
        for k in summary_keys(metrics):
            cells = [format_metric(metrics, c, k) for c in shown]
            if not all(x == "-" for x in cells):
                table.add_row(k, *cells)
        tables.append(table)
        cols += shown
    ck = trainer.checkpoint_callback
    last = out_dir / "checkpoints" / "last.ckpt"
    where = {
        "run dir": out_dir,
        "best checkpoint": ck.best_model_path if ck else "",
        "last checkpoint": last if last.exists() else "",
        "metrics CSV": next(iter(out_dir.glob("csv/**/metrics.csv")), ""),
        "TensorBoard": out_dir / "tensorboard" if (out_dir / "tensorboard").exists() else "",
        "overlays": out_dir / "overlays" if (out_dir / "overlays").exists() else "",
        "test curves": out_dir / "curves" if (out_dir / "curves").exists() else "",
        "metrics JSON": out_dir / "metrics.json",
        "predictions CSV": out_dir / PREDICTIONS if (out_dir / PREDICTIONS).exists() else "",
    }
    console = Console(record=True)  # what it prints also goes to <run dir>/summary.txt
    for table in tables:
        console.print(table)
    if any(f"{c}/auc_ci95_lo" in metrics for c in cols):
        console.print(
            "[lo, hi]: 95 % bootstrap interval, resampling people (a video and its fakes together)",
            soft_wrap=True,
            markup=False,
        )
    console.print(threshold_line(metrics, threshold_note), soft_wrap=True, highlight=False, markup=False)
    for c in cols:
        if metrics.get(f"{c}/undefined"):
            console.print(f"{c}: {metrics[f'{c}/undefined']}", soft_wrap=True, highlight=False, markup=False)
    console.print(
        f"attn_in_lm: share of attention inside the landmark mask (mask_area = chance level), attn_<region>: "
        "on each region; map_corr: mean correlation between the attention maps (1: one map repeated); "
        f"{trainer.global_step} steps in {metrics['wall_time_s']:.0f} s",
        soft_wrap=True,
    )
    where["summary"] = out_dir / SUMMARY
    for k, v in where.items():
        if v:
            console.print(f"  {k:16s} {v}", soft_wrap=True, highlight=False)
    (out_dir / SUMMARY).write_text(console.export_text())
