"""Train a landmark-guided detector: ``python -m lmguide.train [overrides]`` (Hydra).

Builds the datamodule, model, callbacks, loggers and trainer from the composed config, fits, tests
the best checkpoint and prints a one-screen summary. Returns the ``optimized_metric`` (``val/auc``) for
sweepers.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lmguide.alignment import attention_summary
from lmguide.cli import check_argv, friendly_errors, stop_idle_pool_workers
from lmguide.compile import compile_backend, compile_model, compile_stats
from lmguide.errors import ConfigError, LmguideError
from lmguide.loggers import finish_wandb, instantiate_group, log_images, wandb_offline_by_default
from lmguide.metrics import (
    aggregate_videos,
    binary_report,
    bootstrap_auc,
    calibrate_threshold,
    score_split,
    undefined_reason,
)
from lmguide.predictions import NAME as PREDICTIONS
from lmguide.predictions import write_predictions
from lmguide.resume import LAST, ResumeError, is_resume, restart_after_epoch_end
from lmguide.runtime import CONF_DIR, hydra_overrides
from lmguide.viz.curves import plot_curves

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("auc", "acc", "cal_acc", "eer", "ap", "f1", "cal_f1", "video_auc", "attn_in_lm", "mask_area")
#: after attn_in_lm: the share on each landmark region (attn_<region>, as many as the mask has), then
#: how alike the attention maps are (map_corr)
#: summary row names where the metrics.json key alone would not say at which threshold
#: (at most 10 characters, as long as attn_in_lm: a wider column wraps the AUC cells on an 80-column console)
SUMMARY_ROWS = {"acc": "acc @0.5", "f1": "f1 @0.5", "cal_acc": "acc @thr", "cal_f1": "f1 @thr"}


class OutputDirError(LmguideError, RuntimeError):
    """The run's output directory cannot hold its checkpoints (not writable, disk too full)."""


def check_output_dir(out_dir: Path, need_bytes: int) -> None:
    """Refuse to start a run whose checkpoints could not be written: an output directory that cannot be
    created or written to, or a disk with less than ``need_bytes`` free."""
    import shutil
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-check-") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise OutputDirError(
            f"output directory {out_dir} is not writable ({err.strerror or err}): "
            "checkpoints and logs could not be saved; point hydra.run.dir (or paths.log_dir) elsewhere"
        ) from None
    free = shutil.disk_usage(out_dir).free
    if free < need_bytes:
        raise OutputDirError(
            f"only {free / 2**20:.0f} MiB free on the disk of {out_dir}; this run needs about "
            f"{need_bytes / 2**20:.0f} MiB for its checkpoints (best and last: weights and optimizer state) "
            "and logs. Free space or point hydra.run.dir elsewhere"
        )


#: numeric settings checked before any data is prepared: key -> (lowest allowed, whether it may equal it)
NUMERIC_KEYS = {
    "optim.lr": (0.0, False),
    "optim.weight_decay": (0.0, True),
    "loss.lambda_lm": (0.0, True),
    "data.batch_size": (1, True),
    "data.image_size": (32, True),
}


def check_numbers(cfg: DictConfig) -> None:
    """Refuse a bad learning rate, batch size, ... up front, naming the key (not later, inside torch)."""
    import math

    for key, (low, inclusive) in NUMERIC_KEYS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if ok and (value > low or (inclusive and value == low)):
            continue
        bound = f">= {low}" if inclusive else f"> {low}"
        raise ConfigError(f"{key} must be a number {bound}, got {value!r} (e.g. {key}=<number>)")


def checkpoint_bytes(model) -> int:
    """About what the run writes: best.ckpt and last.ckpt (weights + buffers + Adam's two moments,
    written to a temp file before replacing: 3 copies at once) and 64 MiB of logs and overlays."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return 3 * (weights + 2 * params) + 64 * 2**20


def train(cfg: DictConfig, run_overrides: dict | None = None) -> dict[str, float]:
    """Fit (and test) from a composed config; returns the final metrics as floats.

    ``run_overrides``: the group choices and overrides recorded in checkpoints (default: this Hydra
    run's; a resumed run passes the original run's)."""
    import lightning as L
    from lightning.pytorch.plugins.io import CheckpointIO

    from lmguide.checkpoint import AtomicCheckpointIO

    check_numbers(cfg)
    backend = compile_backend(cfg.trainer.get("compile"))  # a bad name fails before any data is read
    t0 = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    wandb_offline_by_default()
    out_dir = Path(cfg.paths.output_dir)

    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    check_output_dir(out_dir, checkpoint_bytes(model))  # before any data is prepared or step is run
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    model.run_overrides = run_overrides or hydra_overrides()
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg.pop("compile", None)  # ours, not a Trainer argument
    plugins = [
        p if isinstance(p, str) else hydra.utils.instantiate(p)
        for p in trainer_cfg.pop("plugins", None) or []
    ]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())  # a killed write never leaves a broken last.ckpt
    trainer = hydra.utils.instantiate(
        trainer_cfg, callbacks=callbacks, logger=loggers or False, plugins=plugins
    )
    restart_after_epoch_end(trainer)  # resume from an epoch end stays exact with validation every N batches
    model = compile_model(model, backend)  # trainer.compile=true|<backend>
    for lg in loggers:
        lg.log_hyperparams(model.run_config)

    metrics: dict[str, float] = {}
    try:
        if cfg.get("ckpt_path"):
            log.info("fitting from %s", cfg.ckpt_path)
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
        if backend:
            stats = compile_stats()
            metrics.update({f"compile/{k}": v for k, v in stats.items()})
            log.info("trainer.compile: %s", stats)
        ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if ckpt:
            # report val metrics of the checkpoint that is kept (and tested), not of the last epoch
            for res in trainer.validate(
                model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True, verbose=False
            ):
                metrics.update({k: float(v) for k, v in res.items()})
        else:
            log.warning("no best checkpoint (e.g. fast_dev_run): reporting the current weights")
        if cfg.get("test"):
            results = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt or None, weights_only=True)
            for res in results:
                metrics.update({k: float(v) for k, v in res.items()})
            if trainer.is_global_zero:
                scored = score_splits(model, datamodule)
                metrics.update(split_statistics(scored, seed=int(cfg.seed)))
                if scored:  # per face, for comparisons of two runs on the same faces (sweep_report)
                    write_predictions(out_dir / PREDICTIONS, scored)
                log_test_curves(scored.get("test"), out_dir, loggers)
    finally:
        finish_wandb(loggers)

    metrics["wall_time_s"] = time.perf_counter() - t0
    if trainer.is_global_zero:  # DDP: every rank holds the same (synced) metrics; rank 0 writes them
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        print_summary(metrics, trainer, out_dir)
    return metrics


#: the scored sets of a run: summary column -> datamodule dataset
SCORED_SETS = {"val": "val", "test": "test", "swaps": "test_swaps"}
#: the metrics that need both classes, as logged by the LightningModule
_TWO_CLASS_KEYS = ("auc", "ap", "eer", "video_auc", "video_ap", "video_eer")


def score_splits(model, datamodule) -> dict[str, dict]:
    """P(fake), labels and video names of the tested weights on val, test and (when the data has face
    swaps) the swap test set, frame models only (``{}`` for a clip model)."""
    if getattr(model, "clip_frames", None):
        log.info(
            "test curves and bootstrap intervals are computed for frame models only (this is a clip model)"
        )
        return {}
    was_training = model.training
    model.eval()
    out = {}
    for name, key in SCORED_SETS.items():
        ds = datamodule.datasets.get(key)
        if ds is not None and not (name == "swaps" and ds is datamodule.datasets.get("test")):
            res = score_split(model, ds, datamodule.eval_batch_size)
            out[name] = res
    model.train(was_training)
    return out


def split_statistics(scored: dict[str, dict], seed: int = 0) -> dict:
    """Per scored set: 95 % bootstrap intervals of the frame and video AUC (resampling people), the
    swap set's detection metrics, and None with the reason for metrics a one-class set leaves undefined.

    Accuracy and F1 are also given at the validation-calibrated threshold (``<set>/cal_acc``,
    ``<set>/cal_f1``, the threshold as ``threshold_val``): the one the best checkpoint stores and
    ``predict`` gives its verdicts at, where 0.5 means little for probabilities that are not calibrated."""
    out: dict = {}
    val = scored.get("val")
    if val is not None and not undefined_reason(val["label"]):
        thr = out["threshold_val"] = calibrate_threshold(val["prob"], val["label"])
        for name, res in scored.items():
            at = binary_report(res["prob"], res["label"], thr)
            out[f"{name}/cal_acc"], out[f"{name}/cal_f1"] = at["acc"], at["f1"]
    for name, res in scored.items():
        if name == "swaps":
            for k, v in binary_report(res["prob"], res["label"]).items():
                if k in ("auc", "ap", "eer", "acc", "f1"):
                    out[f"swaps/{k}"] = v
            out["swaps/attn_in_lm"] = float(res["attn_in_lm"].mean())
            vids, vs, vy = aggregate_videos(res["prob"], res["label"], res["video"])
            out["swaps/video_auc"] = binary_report(vs, vy)["auc"]
        out.update({f"{name}/{k}": v for k, v in attention_summary(res).items()})  # per region, map_corr
        frame = bootstrap_auc(res["prob"], res["label"], res["person"], seed=seed)
        person = dict(zip(res["video"], res["person"], strict=True))
        vids, vs, vy = aggregate_videos(res["prob"], res["label"], res["video"])
        video = bootstrap_auc(vs, vy, [person[v] for v in vids], seed=seed)
        if frame.get("reason"):
            out.update(
                {f"{name}/{k}": None for k in _TWO_CLASS_KEYS}, **{f"{name}/undefined": frame["reason"]}
            )
            continue
        out[f"{name}/auc_ci95_lo"], out[f"{name}/auc_ci95_hi"] = frame["lo"], frame["hi"]
        out[f"{name}/video_auc_ci95_lo"], out[f"{name}/video_auc_ci95_hi"] = video["lo"], video["hi"]
        out[f"{name}/people"] = frame["clusters"]
    return out


def log_test_curves(res: dict | None, out_dir: Path, loggers: list) -> None:
    """ROC, PR and confusion matrix (threshold 0.5) of the tested weights on the test split's frames
    (``res``: :func:`score_splits`'s test entry): PNGs under ``<run dir>/curves/``, also sent to W&B
    (images) and TensorBoard when they log."""
    if res is None:
        return
    curves = out_dir / "curves"
    curves.mkdir(parents=True, exist_ok=True)
    paths = plot_curves(res["prob"], res["label"], 0.5, curves, "test (frames)")
    captions = ["ROC", "PR", "confusion @0.5"]
    log_images(loggers, {f"test/{p.stem}": p for p in paths}, group="test/curves", captions=captions)


def format_metric(metrics: dict, split: str, key: str) -> str:
    """One summary cell: the value, its bootstrap interval for AUCs, ``undefined`` or ``-``."""
    full = f"{split}/{key}"
    if full not in metrics:
        return "-"
    v = metrics[full]
    if v is None:
        return "undefined"
    lo, hi = metrics.get(f"{full}_ci95_lo"), metrics.get(f"{full}_ci95_hi")
    return f"{v:.4f}" + ("" if lo is None else f" [{lo:.2f}, {hi:.2f}]")


def summary_keys(metrics: dict) -> list[str]:
    """The summary's rows: :data:`SUMMARY_KEYS` with the per-region shares (``attn_<region>``, in the
    order the run wrote them) after ``attn_in_lm`` and ``map_corr`` last."""
    regions = list(dict.fromkeys(k.split("/", 1)[1] for k in metrics if "/attn_" in k))
    regions = [r for r in regions if r != "attn_in_lm" and not r.endswith(("_ci95_lo", "_ci95_hi"))]
    i = SUMMARY_KEYS.index("attn_in_lm") + 1
    return [*SUMMARY_KEYS[:i], *regions, *SUMMARY_KEYS[i:], "map_corr"]


def print_summary(metrics: dict[str, float], trainer, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="lmguide: run summary (best checkpoint)", show_header=True, header_style="bold")
    table.add_column("metric")
    cols = [c for c in SCORED_SETS if any(k.startswith(f"{c}/") for k in metrics)]
    for c in cols:
        table.add_column("swaps (cross-method)" if c == "swaps" else c, justify="right")
    for k in summary_keys(metrics):
        cells = [format_metric(metrics, c, k) for c in cols]
        if all(x == "-" for x in cells):
            continue
        table.add_row(SUMMARY_ROWS.get(k, k), *cells)
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
    console = Console()
    console.print(table)
    if any(f"{c}/auc_ci95_lo" in metrics for c in cols):
        console.print(
            "[lo, hi]: 95 % bootstrap interval, resampling people (a video and its fakes together)",
            soft_wrap=True,
            markup=False,
        )
    if metrics.get("threshold_val") is not None:
        console.print(
            f"@thr: fake at P(fake) >= {metrics['threshold_val']:.4f}, the threshold calibrated on val "
            "that the best checkpoint stores and predict uses",
            soft_wrap=True,
            highlight=False,
        )
    for c in cols:
        if metrics.get(f"{c}/undefined"):
            console.print(f"{c}: {metrics[f'{c}/undefined']}", soft_wrap=True, highlight=False, markup=False)
    console.print(
        f"attn_in_lm: share of attention inside the landmark mask (mask_area = chance level), attn_<region>: "
        "on each region; map_corr: mean correlation between the attention maps (1: one map repeated); "
        f"{trainer.global_step} steps in {metrics['wall_time_s']:.0f} s",
        soft_wrap=True,
    )
    for k, v in where.items():
        if v:
            console.print(f"  {k:16s} {v}", soft_wrap=True, highlight=False)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    overrides = None
    if is_resume(cfg.task_name, cfg.get("resume"), cfg.get("ckpt_path")):
        cfg, overrides = _resumed(cfg)
    metrics = train(cfg, overrides)
    return metrics.get(cfg.optimized_metric)


def _resumed(cfg: DictConfig) -> tuple[DictConfig, dict]:
    """``(config, recorded overrides)`` of the interrupted run (this Hydra run dir: see
    conf/hydra/default.yaml) with this command's other overrides on top, fitting from its last.ckpt."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from lmguide.checkpoint import (
        checkpoint_config,
        read_checkpoint,
        remove_stale_temps,
        skip_initial_weights,
    )

    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        raise ResumeError("resume= continues one run: give it one job's directory, without -m")
    run = Path(hc.runtime.output_dir)
    skip = ("resume", "ckpt_path")
    new = [o for o in hc.overrides.task if o.split("=", 1)[0].lstrip("+~") not in skip]
    last = run / LAST
    remove_stale_temps(last.parent)  # a write the kill interrupted: the previous last.ckpt stands
    ckpt = read_checkpoint(last)
    recorded = ckpt.get("lmguide_overrides")
    if not recorded:
        raise ResumeError(f"{last} holds no recorded overrides (written by an older lmguide): cannot resume")
    resumed = checkpoint_config(ckpt, new, output_dir=run, source=last)
    with open_dict(resumed):
        resumed.ckpt_path = str(last)
        resumed.resume = None
    overrides = {"choices": recorded["choices"], "overrides": [*recorded["overrides"], *new]}
    skip_initial_weights(resumed)  # last.ckpt restores every weight: no weights file, wheel or hub read
    if resumed.get("logger") and "csv" in resumed.logger:  # the CSV logger would overwrite metrics.csv
        resumed.logger.csv.version = Path(hc.output_subdir).name  # csv/resumed-<time>/metrics.csv
    log.info("resuming %s from %s (new overrides: %s)", run, resumed.ckpt_path, new or "none")
    return resumed, overrides


if __name__ == "__main__":
    check_argv()
    try:
        main()
    finally:
        stop_idle_pool_workers()
