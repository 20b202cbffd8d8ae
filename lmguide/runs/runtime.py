"""What every entry point sets up before it composes a config: environment defaults, the config
resolvers and the Hydra run-time helpers (the running sweep, a job's GPU, this run's overrides).

Importing this module applies :func:`setup` (idempotent): the entry points (``python -m lmguide.X``),
:func:`lmguide.runs.config_guard.compose_train_config` and the tests import it; ``import lmguide`` and the
model modules do not, so importing a model never changes ``os.environ`` or pulls in OmegaConf.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Repository root (the folder holding conf/ and lmguide/); configs build paths from it, never from cwd.
ROOT_DIR = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT_DIR / "conf"


def sweep_group() -> str | None:
    """Name of the running Hydra multirun (its sweep dir, e.g. ``2026-11-25_01-10-00``), else None:
    the W&B group that keeps the runs of one sweep together."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None


def job_device() -> int | list[int]:
    """``trainer.devices`` for a job of a parallel (joblib) sweep: job k gets GPU k mod n as a list
    ``[k mod n]``; without GPUs (or outside a sweep) 1 device."""
    from hydra.core.hydra_config import HydraConfig

    try:
        import torch

        n = torch.cuda.device_count()
    except ImportError:
        n = 0
    if n == 0 or not HydraConfig.initialized():
        return 1
    num = HydraConfig.get().job.get("num") or 0
    return [int(num) % n]


def hydra_overrides() -> dict | None:
    """The group choices and command-line overrides of this run (None outside ``@hydra.main``), kept in
    checkpoints so the model can be re-composed later with the current code and new overrides."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
    return {"choices": choices, "overrides": list(hc.overrides.task)}


def _resume_run_dir(task, resume, ckpt_path, runs_root, fresh):
    from lmguide.runs.cli import fail
    from lmguide.runs.errors import LmguideError
    from lmguide.runs.requeue import job_run_dir
    from lmguide.runs.resume import run_dir

    try:  # a SLURM batch job's run is named after the job: its requeued self finds it again
        return run_dir(task, resume, ckpt_path, runs_root, job_run_dir(task, runs_root, fresh))
    except LmguideError as err:  # raised while Hydra resolves hydra.run.dir: report it here, in one line
        fail(str(err))


def _resume_hydra_subdir(*args):
    from lmguide.runs.resume import hydra_subdir

    return hydra_subdir(*args)


def setup() -> None:
    """Environment defaults and resolvers; safe to call any number of times."""
    # before albumentations / wandb are imported: no update check against PyPI on import, no wandb
    # error-report prompt. Users can still override both from their shell.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    from omegaconf import OmegaConf

    resolvers = {
        "lmguide_root": lambda: str(ROOT_DIR),
        "lmguide_sweep_group": sweep_group,
        "lmguide_job_device": job_device,
        "lmguide_run_dir": _resume_run_dir,
        "lmguide_hydra_subdir": _resume_hydra_subdir,
        "expanduser": lambda p: os.path.expanduser(str(p)),
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


setup()
