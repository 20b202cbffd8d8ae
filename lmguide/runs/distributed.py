"""Runs of several processes (DDP): what is refused before any process waits on another.

* **The landmark cache is built before DDP starts.** ``prepare_data`` runs on one process per node
  while the others wait at Lightning's barrier; a MediaPipe pass over FF++ or DFDC takes hours there,
  unsharded, and on several nodes each node would index the whole set again. A DDP run
  (``trainer.world_size > 1``) whose cache is incomplete therefore stops on every rank before the
  processes start (:func:`incomplete_cache`), with the sharded ``lmguide.prepare`` command to run first.
  A single-process run keeps preparing in ``prepare_data``. On several nodes the cache lives on a
  shared filesystem (``paths.cache_dir``) and is indexed once, by the prepare command.
* **A multirun with a DDP trainer needs a launcher that starts the ranks.** Lightning's own launcher
  re-runs the command line (``-m`` and all) in each child process, so every child would run the whole
  sweep: refused (:func:`sweep_refusal`) unless SLURM (``launcher=submitit_slurm``, one task per device)
  or torchrun started the processes.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from lmguide.runs.errors import LmguideError


class DistributedError(LmguideError, RuntimeError):
    """A DDP run that would stall or repeat itself; the message gives the command that works instead."""


#: config groups and key prefixes of a training command that also decide the landmark cache
PREPARE_GROUPS = ("data", "landmarks", "paths")


def prepare_command(choices: Mapping[str, str | None], overrides: Sequence[str]) -> str:
    """``python -m lmguide.prepare …`` for the data of a training command: its ``data`` and
    ``landmarks`` choices and its ``data.*``, ``landmarks.*`` and ``paths.*`` overrides."""
    args = [f"{g}={choices[g]}" for g in ("data", "landmarks") if choices.get(g)]
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] in PREPARE_GROUPS and "." in key:
            args.append(text)
    return shlex.join(["python", "-m", "lmguide.prepare", *args])


def hydra_prepare_command() -> str:
    """:func:`prepare_command` of the running Hydra command (a generic one outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "python -m lmguide.prepare data=<layout> data.root=<dir>"
    hc = HydraConfig.get()
    return prepare_command(dict(hc.runtime.choices), list(hc.overrides.task))


def incomplete_cache(work: Path, world: int, command: str) -> DistributedError:
    """The one-line refusal of a DDP run on a landmark cache that is not complete."""
    torchrun = command.replace("python -m", "torchrun --nproc-per-node=<n> -m", 1)
    return DistributedError(
        f"the landmark cache {work} is not complete, and this run starts {world} DDP processes: "
        "indexing it inside DDP would run on one rank while the others wait at a barrier. Build it first, "
        f"sharded: `{command} shard=<i>/<n>` for i in 0..n-1 (a SLURM array: "
        f"shard=$SLURM_ARRAY_TASK_ID/<n>), or `{torchrun}` (shard=auto); then train again"
    )


def external_launcher(env: Mapping[str, str] | None = None) -> str | None:
    """``"slurm"`` / ``"torchrun"`` when that started this process as one rank of several (Lightning then
    starts no process of its own), else None. SLURM counts as Lightning counts it: ``SLURM_NTASKS`` set
    and not an interactive shell."""
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun"
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "slurm"
    return None


def ddp_processes(strategy: object, devices: object, num_nodes: object, gpus: int | None = None) -> int:
    """How many processes Lightning's own launcher would start for these trainer settings (1: none).
    ``ddp_spawn`` / ``ddp_fork`` start theirs without re-running the command: counted as 1."""
    name = str(strategy or "auto").lower()
    if "spawn" in name or "fork" in name or name in ("single_device", "dp"):
        return 1
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        n = len(devices)
    elif str(devices).strip() in ("auto", "-1"):
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count()
        n = max(1, gpus)
    elif isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    else:
        n = int(devices or 1)
    return n * int(num_nodes or 1)


def sweep_refusal(multirun: bool, trainer: Mapping, env: Mapping[str, str] | None = None) -> str | None:
    """The one-line refusal of a multirun whose jobs would each start DDP ranks with Lightning's own
    launcher (None when the run may go on)."""
    if not multirun or external_launcher(env):
        return None
    strategy = trainer.get("strategy", "auto")
    n = ddp_processes(strategy, trainer.get("devices", 1), trainer.get("num_nodes", 1))
    if n <= 1:
        return None
    return (
        f"a multirun (-m) with a DDP trainer (trainer.strategy={strategy}, {n} processes) is refused: "
        "Lightning's launcher re-runs the whole command in each rank, so every rank would run the whole "
        "sweep. Use a launcher that starts the ranks itself: launcher=submitit_slurm (one SLURM task "
        f"per device) or torchrun (`torchrun --nproc-per-node={n} -m lmguide.train -m … "
        "hydra.sweep.dir=<fixed dir>`); or run the jobs one at a time without -m, or trainer.devices=1"
    )


def check_sweep_launcher(trainer: Mapping) -> None:
    """Stop (``error: …``, exit 1) a Hydra multirun job that :func:`sweep_refusal` refuses."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lmguide.runs.cli import fail

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if line := sweep_refusal(multirun, trainer):
        fail(line)  # the whole sweep stops: every job would fail the same way
