"""Evaluate a checkpoint: ``python -m lmguide.eval ckpt_path=... [split=test] [data=<layout>]``.

The model is rebuilt from the checkpoint's own config (see :mod:`lmguide.training.checkpoint`). The scoring,
the statistics, their keys and cells are :mod:`lmguide.evaluation.scoring`'s, the ones train's summary and
``lmguide.crosseval`` use: ``<split>/<name>``, e.g. ``test/auc``, ``test/video_auc``, ``test/cal_acc``.
Per sample and per video AUC, AP, EER, and ACC / balanced ACC / precision / recall / F1 at 0.5 and at
the threshold calibrated on the validation split (``cal_``, ``threshold_val``): the one the checkpoint
stores, read from it (predict's). A checkpoint without one gets one calibrated on the val split here,
and a warning and ``threshold_note`` say so. Attention-in-landmark share and pointing-game hit rate; and
what the prepare manifest recorded for the split (``<split>/n_no_face`` frames without a face,
``n_unusable``, ``statuses``: counted, never scored). Writes ``metrics.json``, ``predictions.csv`` (one
row per scored frame of val and of the split, with training's columns: see
:mod:`lmguide.evaluation.predictions`),
``roc.png``, ``pr.png`` and ``confusion.png`` into the run directory.

A clip (video) checkpoint (``backbone=efficientnet_lstm``) is evaluated on clips, as its training's test
step does: the run's config sets ``data.clip_frames``, so every split is a
:class:`~lmguide.data.clips.ClipDataset`. A sample (``unit``) is then a clip (``<split>/n_clips``, a
row per clip in ``predictions.csv``, keyed by its first frame) instead of a frame; a video's score
aggregates its clips; the attention metrics stay per frame (``attn_in_lm``: every frame of every clip).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmguide.evaluation.predictions import NAME as PREDICTIONS
from lmguide.evaluation.predictions import write_predictions
from lmguide.runs.cli import check_argv, friendly_errors
from lmguide.runs.errors import ConfigError
from lmguide.runs.loggers import finish_wandb, instantiate_group, log_images, wandb_offline_by_default
from lmguide.runs.runtime import CONF_DIR
from lmguide.viz.curves import plot_curves

log = logging.getLogger(__name__)


def data_choice(cfg: DictConfig) -> str | None:
    """The ``data=<layout>`` of this eval command: a choice of the ``data`` group (``conf/data/``),
    or a plain name when ``cfg`` was composed by hand."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("data")
        if choice:
            return choice
    data = cfg.get("data")
    if data is not None and not isinstance(data, str):
        raise ConfigError(
            "eval's data group was composed without Hydra's runtime record, so its name is unknown: pass "
            'the layout as overrides=["data=<layout>"] (or run python -m lmguide.eval data=<layout>)'
        )
    return data


def evaluate(cfg: DictConfig) -> dict:
    from lmguide.evaluation.metrics import score_split
    from lmguide.evaluation.scoring import (
        build_datamodule,
        manifest_counts,
        model_threshold,
        prefixed,
        scoring_device,
        split_metrics,
        unit_of,
    )
    from lmguide.training.checkpoint import load_model

    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split must be train, val or test, got {cfg.split!r}")
    where = scoring_device(cfg.get("device"), cfg.get("precision"))  # a bad device fails before loading
    data = data_choice(cfg)
    overrides = ([f"data={data}"] if data else []) + list(cfg.overrides)
    model, run_cfg = load_model(cfg.ckpt_path, overrides, output_dir=out_dir)
    dm = build_datamodule(run_cfg, dict.fromkeys(["val", cfg.split]))  # a test set may have no train split
    unit = unit_of(model)  # what one scored sample is

    where["num_workers"] = dm.num_workers
    val = score_split(model, dm.datasets["val"], dm.eval_batch_size, **where)
    res = (
        val if cfg.split == "val" else score_split(model, dm.datasets[cfg.split], dm.eval_batch_size, **where)
    )
    threshold, note = model_threshold(model, val)  # the stored one; calibrated here (and said) without

    metrics: dict = {} if threshold is None else {"threshold_val": threshold}
    stats = split_metrics(res, unit, threshold, cfg.video_agg, int(cfg.get("seed", 0) or 0))
    stats.update(manifest_counts(dm, cfg.split))  # faceless frames: counted, never scored
    metrics.update(prefixed(cfg.split, stats))

    head = {"split": cfg.split, "ckpt_path": str(cfg.ckpt_path), "video_agg": cfg.video_agg, "unit": unit}
    head["threshold_note"] = note
    (out_dir / "metrics.json").write_text(json.dumps({**head, **metrics}, indent=2) + "\n")
    write_predictions(out_dir / PREDICTIONS, {"val": val, cfg.split: res})  # train's columns
    thr = 0.5 if threshold is None else threshold
    plot_note = f"0.5: {note}" if threshold is None else note
    plots = plot_curves(res["prob"], res["label"], thr, out_dir, f"{cfg.split} ({unit}s)", plot_note)
    _send_to_loggers(cfg, metrics, plots)
    _print(metrics, cfg.split, out_dir, unit, cfg.video_agg, note)
    return metrics


def _send_to_loggers(cfg: DictConfig, metrics: dict, plots: list[Path]) -> None:
    """Metrics and the three plots to the configured loggers (none by default)."""
    wandb_offline_by_default()
    loggers = instantiate_group(cfg.get("logger"))
    if not loggers:
        return
    scalars = {f"eval/{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    try:
        for lg in loggers:
            lg.log_metrics(scalars)
        log_images(loggers, {f"eval/{cfg.split}/{p.stem}": p for p in plots}, step=0)
        for lg in loggers:
            lg.save()
    finally:
        finish_wandb(loggers)


#: the rows of eval's table, each per sample and per video (``video_<row>``)
ROWS = ("auc", "ap", "eer", "acc", "balanced_acc", "cal_acc", "cal_balanced_acc", "precision", "recall")
ROWS += ("f1", "cal_f1")


def _print(
    metrics: dict, split: str, out_dir: Path, unit: str = "frame", video_agg: str = "mean", note: str = ""
) -> None:
    from rich.console import Console
    from rich.table import Table

    from lmguide.evaluation.scoring import VIDEO, format_metric, threshold_line

    def get(key: str):
        return metrics.get(f"{split}/{key}")

    t = Table(title=f"lmguide eval: {split} split")
    t.add_column("metric")
    t.add_column(unit, justify="right")
    t.add_column(f"video ({video_agg})", justify="right")  # a video's score: video_agg of its frames'
    for k in ROWS:
        t.add_row(k, format_metric(metrics, split, k), format_metric(metrics, split, f"{VIDEO}{k}"))
    per_frame = "" if unit == "frame" else " (per frame)"
    shown = [k.split("/", 1)[1] for k in metrics if k.startswith((f"{split}/attn_", f"{split}/map_corr"))]
    for k in ("attn_in_lm", "pointing_game", *[k for k in shown if k != "attn_in_lm"]):
        t.add_row(f"{k}{per_frame}", format_metric(metrics, split, k), "-")
    console = Console()
    console.print(t)
    console.print(threshold_line(metrics, note), soft_wrap=True, highlight=False, markup=False)
    if get("undefined"):
        console.print(f"{split}: {get('undefined')}", soft_wrap=True, highlight=False, markup=False)
    elif get("auc_ci95_lo") is not None:
        console.print(
            f"AUC [lo, hi]: 95 % bootstrap interval resampling the {get('people')} people "
            f"(a video and its fakes together), not {unit}s",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    unscored = ""
    if get("n_unusable"):
        unscored = f" ({get('n_unusable')} manifest rows unusable, {get('n_no_face')} without a face)"
    console.print(
        f"{get(f'n_{unit}s')} {unit}s, {get('n_videos')} videos{unscored}; written to {out_dir}: "
        "metrics.json predictions.csv roc.png pr.png confusion.png",
        soft_wrap=True,
        highlight=False,
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
@friendly_errors
def main(cfg: DictConfig) -> float:
    return evaluate(cfg).get(f"{cfg.split}/auc")


if __name__ == "__main__":
    check_argv()
    main()
