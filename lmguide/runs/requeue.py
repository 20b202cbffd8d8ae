"""A SLURM job that is preempted (or reaches its time limit) is requeued and goes on from its last.ckpt.

Two ways in, one way on:

* ``sbatch --signal=USR1@120 --requeue`` around ``srun python -m lmguide.train …``: Lightning detects
  SLURM and its ``SLURMEnvironment`` (``auto_requeue=True``, ``requeue_signal=SIGUSR1``) requeues the
  job on the signal (``scontrol requeue``); SLURM then stops it with SIGTERM (exit 143, the run dir
  marked INTERRUPTED). A run's directory is named after the job, ``<log_dir>/train/runs/slurm-<job id>``
  (:func:`slurm_job`), not after the clock, so the requeued job (same id) finds it again.
* ``-m launcher=submitit_slurm``: submitit catches its signal (USR2, ``signal_delay_s`` before the end)
  and requeues the job through the launcher's ``checkpoint``; each sweep job keeps its numbered
  directory (the sweep dir's timestamp is resolved once, in the submitting process).

Either way the requeued job (``SLURM_RESTART_COUNT`` ≥ 1) finds ``checkpoints/last.ckpt`` in its own
directory and fits on from it exactly as ``resume=<dir>`` would (:mod:`lmguide.runs.resume`); a job requeued
before its first last.ckpt starts over in the same directory, and one that had already finished keeps
its results. Lightning's own mid-epoch ``hpc_ckpt_*.ckpt`` (written on the signal) is removed, never
loaded: a fit restored mid-epoch would not repeat the uninterrupted run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from lmguide.runs.resume import LAST

log = logging.getLogger(__name__)


def slurm_job(env: Mapping[str, str] | None = None) -> str | None:
    """The id of the SLURM batch job this process runs in (``<array job>_<task>`` for an array task), or
    None outside SLURM and in an interactive allocation (``salloc``: several runs in one job)."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if not job or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else job


def restarts(env: Mapping[str, str] | None = None) -> int:
    """How many times SLURM has requeued this job (0 for its first start, and outside SLURM)."""
    env = os.environ if env is None else env
    if slurm_job(env) is None:
        return 0
    try:
        return int(env.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def job_run_dir(task: str | None, runs_root: str, fresh: str, env: Mapping[str, str] | None = None) -> str:
    """A new training run's directory: ``<runs_root>/slurm-<job>`` in a SLURM batch job (found again when
    the job is requeued, and the same on every rank), else ``fresh`` (a timestamped one)."""
    job = slurm_job(env)
    return str(Path(runs_root) / f"slurm-{job}") if task == "train" and job else fresh


def requeued_state(run: Path, env: Mapping[str, str] | None = None) -> str | None:
    """What a requeued job does in its directory ``run``: ``"resume"`` (its last.ckpt is there),
    ``"finished"`` (its metrics.json is: nothing to train), ``"restart"`` (requeued before its first
    last.ckpt); None for a job that was not requeued. Removes Lightning's mid-epoch ``hpc_ckpt_*.ckpt``,
    which Lightning would otherwise load by itself when no checkpoint is given."""
    if restarts(env) < 1:
        return None
    for stale in run.glob("hpc_ckpt_*.ckpt"):
        stale.unlink(missing_ok=True)
    if (run / "metrics.json").exists():
        return "finished"
    return "resume" if (run / LAST).is_file() else "restart"
