"""lmguide: face-forgery detectors whose attention is guided by facial landmarks."""

import os
from pathlib import Path

# Set before albumentations / wandb are imported anywhere: no update check against PyPI on import,
# no wandb error-report prompt. Users can still override both from their shell.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")

__version__ = "0.1.0"

#: Repository root (the folder holding conf/ and lmguide/); configs build paths from it, never from cwd.
ROOT_DIR = Path(__file__).resolve().parent.parent
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


def _resume_run_dir(*args):
    from lmguide.cli import fail
    from lmguide.resume import ResumeError, run_dir

    try:
        return run_dir(*args)
    except ResumeError as err:  # raised while Hydra resolves hydra.run.dir: report it here, in one line
        fail(str(err))


def _resume_hydra_subdir(*args):
    from lmguide.resume import hydra_subdir

    return hydra_subdir(*args)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("lmguide_root"):
        OmegaConf.register_new_resolver("lmguide_root", lambda: str(ROOT_DIR))
    if not OmegaConf.has_resolver("lmguide_sweep_group"):
        OmegaConf.register_new_resolver("lmguide_sweep_group", sweep_group)
    if not OmegaConf.has_resolver("lmguide_job_device"):
        OmegaConf.register_new_resolver("lmguide_job_device", job_device)
    if not OmegaConf.has_resolver("lmguide_run_dir"):
        OmegaConf.register_new_resolver("lmguide_run_dir", _resume_run_dir)
    if not OmegaConf.has_resolver("lmguide_hydra_subdir"):
        OmegaConf.register_new_resolver("lmguide_hydra_subdir", _resume_hydra_subdir)
    if not OmegaConf.has_resolver("expanduser"):
        OmegaConf.register_new_resolver("expanduser", lambda p: os.path.expanduser(str(p)))


_register_resolvers()
