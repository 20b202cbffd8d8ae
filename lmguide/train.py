"""Train a landmark-guided detector: ``python -m lmguide.train [overrides]`` (Hydra).

Resumes a run (``resume=``) or a requeued SLURM job where asked, then runs
:func:`lmguide.training.fit.train`: datamodule, model, callbacks, loggers and trainer from the
composed config, the fit, the best checkpoint scored and a one-screen summary. Returns the
``optimized_metric`` (``val/auc``) for sweepers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmguide.runs.cli import check_argv, friendly_errors, stop_idle_pool_workers
from lmguide.runs.distributed import check_sweep_launcher
from lmguide.runs.requeue import requeued_state, restarts
from lmguide.runs.resume import (
    LAST,
    ResumeError,
    is_resume,
)
from lmguide.runs.runtime import CONF_DIR
from lmguide.training.fit import train

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    check_sweep_launcher(cfg.trainer)  # -m with DDP needs submitit or torchrun
    overrides = None
    out = Path(cfg.paths.output_dir)
    requeued = requeued_state(out)  # a preempted SLURM job started again (lmguide/runs/requeue.py)
    if requeued == "finished":  # it had finished before SLURM requeued it: its results stand
        return json.loads((out / "metrics.json").read_text()).get(cfg.optimized_metric)
    if is_resume(cfg.task_name, cfg.get("resume"), cfg.get("ckpt_path")) or requeued == "resume":
        cfg, overrides = _resumed(cfg, requeued=requeued == "resume")
    metrics = train(cfg, overrides)
    return metrics.get(cfg.optimized_metric)


def _resumed(cfg: DictConfig, requeued: bool = False) -> tuple[DictConfig, dict]:
    """``(config, recorded overrides)`` of the interrupted run (this Hydra run dir: see
    conf/hydra/default.yaml) with this command's other overrides on top, fitting from its last.ckpt.
    ``requeued``: a requeued SLURM job (a sweep's too) going on in its own directory with its own
    command (lmguide/runs/requeue.py)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from lmguide.training.checkpoint import (
        checkpoint_config,
        read_checkpoint,
        remove_stale_temps,
        skip_initial_weights,
    )

    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN and not requeued:
        raise ResumeError("resume= continues one run: give it one job's directory, without -m")
    run = Path(hc.runtime.output_dir)
    skip = ("resume", "ckpt_path")
    new = [] if requeued else [o for o in hc.overrides.task if o.split("=", 1)[0].lstrip("+~") not in skip]
    last = run / LAST
    remove_stale_temps(last.parent)  # a write the kill interrupted: the previous last.ckpt stands
    ckpt = read_checkpoint(last)
    recorded = ckpt.get("lmguide_overrides")
    if not recorded:
        raise ResumeError(f"{last} holds no recorded overrides (written by an older lmguide): cannot resume")
    resumed = checkpoint_config(ckpt, new, output_dir=run, source=last)
    done, limit = ckpt.get("global_step"), resumed.trainer.get("max_steps")
    if isinstance(done, int) and isinstance(limit, int) and 0 <= limit <= done:
        raise ResumeError(
            f"resume={run}: its last.ckpt is at step {done} and trainer.max_steps={limit}: nothing is left "
            f"to train, and the run's results stay as they are; give trainer.max_steps above {done} to go on"
        )
    with open_dict(resumed):
        resumed.ckpt_path = str(last)
        resumed.resume = None
    overrides = {"choices": recorded["choices"], "overrides": [*recorded["overrides"], *new]}
    skip_initial_weights(resumed)  # last.ckpt restores every weight: no weights file, wheel or hub read
    if resumed.get("logger") and "csv" in resumed.logger:  # the CSV logger would overwrite metrics.csv
        resumed.logger.csv.version = f"requeued-{restarts()}" if requeued else Path(hc.output_subdir).name
    log.info("resuming %s from %s (new overrides: %s)", run, resumed.ckpt_path, new or "none")
    return resumed, overrides


if __name__ == "__main__":
    check_argv()
    try:
        main()
    finally:
        stop_idle_pool_workers()
