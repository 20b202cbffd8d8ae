"""One training run, whole: :func:`train` builds the datamodule, model, callbacks, loggers and
trainer from a composed config, fits, scores val, test, the swaps and the held-out sources with the
best checkpoint (:mod:`lmguide.evaluation.run_report`), writes ``metrics.json`` and prints the
one-screen summary. ``python -m lmguide.train`` is its command; the benchmarks time it as it is.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lmguide.data.cache import atomic_write_text
from lmguide.data.datamodule import for_model
from lmguide.evaluation.predictions import NAME as PREDICTIONS
from lmguide.evaluation.predictions import write_predictions
from lmguide.evaluation.run_report import (
    log_test_curves,
    print_summary,
    report_sources,
    score_splits,
    split_statistics,
)
from lmguide.runs.errors import LmguideError, require_number
from lmguide.runs.loggers import finish_wandb, instantiate_group, log_scalars, wandb_offline_by_default
from lmguide.runs.resume import (
    INTERRUPTED,
    LAST,
    interrupted_exit,
    restart_after_epoch_end,
)
from lmguide.runs.runtime import hydra_overrides
from lmguide.sweeps.jobs import print_stopped_sweep
from lmguide.training.compile import compile_backend, compile_mode, compile_model, compile_stats
from lmguide.training.provenance import build_provenance, stamp_checkpoints

log = logging.getLogger(__name__)
#: the end-of-run figures so far, written as each set is scored (metrics.json replaces it at the end)
PARTIAL = "metrics.partial.json"


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


#: numeric settings checked before any data is prepared: key -> require_number's range
NUMERIC_KEYS = {
    "optim.lr": dict(low=0, low_open=True, example=1e-3),
    "optim.weight_decay": dict(low=0),
    "loss.lambda_lm": dict(low=0),
    "data.batch_size": dict(low=1),
    "data.image_size": dict(low=32, example=128),
}


def check_numbers(cfg: DictConfig) -> None:
    """Refuse a bad learning rate, batch size, ... up front, naming the key (not later, inside torch)."""
    for key, bounds in NUMERIC_KEYS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            require_number(key, value, **bounds)


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

    from lmguide.training.checkpoint import AtomicCheckpointIO, stored_threshold

    check_numbers(cfg)
    backend = compile_backend(cfg.trainer.get("compile"))  # a bad name fails before any data is read
    mode = compile_mode(cfg.trainer.get("compile_mode"), backend)
    t0 = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    wandb_offline_by_default()
    out_dir = Path(cfg.paths.output_dir)

    model = hydra.utils.instantiate(cfg.model)
    datamodule = for_model(cfg.data, model)
    check_output_dir(out_dir, checkpoint_bytes(model))  # before any data is prepared or step is run
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    model.run_overrides = run_overrides or hydra_overrides()
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg.pop("compile", None)  # ours, not Trainer arguments
    trainer_cfg.pop("compile_mode", None)
    plugins = [
        p if isinstance(p, str) else hydra.utils.instantiate(p)
        for p in trainer_cfg.pop("plugins", None) or []
    ]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())  # a killed write never leaves a broken last.ckpt
    trainer = hydra.utils.instantiate(
        trainer_cfg, callbacks=callbacks, logger=loggers or False, plugins=plugins
    )
    datamodule.check_cache_for(trainer.world_size)  # DDP: prepared beforehand, never inside the barrier
    restart_after_epoch_end(trainer)  # resume from an epoch end stays exact with validation every N batches
    model = compile_model(model, backend, mode)  # trainer.compile=true|<backend>, trainer.compile_mode
    for lg in loggers:
        lg.log_hyperparams(model.run_config)

    metrics: dict[str, float] = {}
    threshold_note = ""
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
                # the threshold the tested checkpoint stores (its on_load_checkpoint restored it): read
                threshold, threshold_note = stored_threshold(model)
                if threshold is None:
                    threshold_note = "its validation calibrated none (one class only, or no validation)"
                stats: dict = {}

                def keep(name: str, res: dict) -> None:  # each set's figures on disk as soon as scored
                    stats.update(split_statistics({name: res}, int(cfg.seed), threshold))
                    atomic_write_text(out_dir / PARTIAL, json.dumps({**metrics, **stats}, indent=2) + "\n")

                # on the trainer's device, in its precision, with loader workers
                scored = score_splits(model, datamodule, trainer, keep)  # swaps/*, cal_*, intervals, …
                unlogged = {k: v for k, v in stats.items() if k not in metrics}
                metrics.update(stats)
                if scored:  # per face, for comparisons of two runs on the same faces (sweep_report)
                    write_predictions(out_dir / PREDICTIONS, scored)
                log_test_curves(scored.get("test"), out_dir, loggers, metrics.get("threshold_val"))
                log_scalars(loggers, unlogged, trainer.global_step)  # and flush, the curves with them
                metrics.update(report_sources(scored, datamodule, metrics.get("threshold_val"), out_dir))
                provenance = build_provenance(datamodule, metrics, trainer.global_step)
                stamp_checkpoints([ckpt, out_dir / LAST], provenance)
    except SystemExit as stop:  # SIGTERM / Ctrl-C: exit 143 / 130, never 0, and say how to go on
        stop = interrupted_exit(stop, trainer, out_dir)
        print_stopped_sweep(stop.code)  # in a multirun: which of its jobs did not run
        raise stop from None
    finally:
        finish_wandb(loggers)

    metrics["wall_time_s"] = time.perf_counter() - t0
    if trainer.is_global_zero:  # DDP: every rank holds the same (synced) metrics; rank 0 writes them
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (out_dir / PARTIAL).unlink(missing_ok=True)  # metrics.json holds all of it
        print_summary(metrics, trainer, out_dir, threshold_note)
        (out_dir / INTERRUPTED).unlink(missing_ok=True)  # a resumed run that finished
    return metrics
