"""One training run per run directory, and a finished run is never silently overwritten.

:class:`RunDirGuard` is a Hydra callback (``conf/hydra/default.yaml``). Before Hydra writes anything
into the run directory of ``python -m lmguide.train`` it

1. checks that the directory can be created and written to;
2. takes an exclusive ``flock`` on ``<run dir>/.lmguide.lock``, held until the process ends. The kernel
   drops it when the process exits or is killed, so a crashed run leaves no stale lock; the file keeps
   the holder's pid and host for the message a second run gets;
3. refuses a directory that already holds a run (``metrics.json`` or a checkpoint) unless the command
   is ``resume=``, a requeued SLURM job going on in its own directory (:mod:`lmguide.runs.requeue`), or
   ``overwrite=true``; with ``overwrite=true`` the old run's outputs are removed first,
   so the directory never mixes two runs.

Jobs of a multirun keep their own numbered directories and are not checked here. Processes that
Lightning starts for the other DDP ranks re-run the command with the same directory: only rank 0 locks
(srun's other tasks, ``SLURM_PROCID`` > 0, neither).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
from pathlib import Path

from hydra.experimental.callback import Callback

from lmguide.runs.cli import fail

#: what a training run writes into its directory (removed by overwrite=true)
RUN_OUTPUTS = ("checkpoints", "metrics.json", "tensorboard", "csv", "curves", "overlays", "wandb", ".hydra")
LOCK_NAME = ".lmguide.lock"


def _rank_zero() -> bool:
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")  # srun starts every rank of a DDP job
    return all(int(os.environ.get(v, "0") or 0) == 0 for v in ranks)


def holds_run(run: Path) -> str | None:
    """``"finished"`` / ``"interrupted"`` when ``run`` holds a training run's results, else None."""
    if (run / "metrics.json").exists():
        return "finished"
    if any((run / "checkpoints").glob("*.ckpt")):
        return "interrupted"
    return None


class RunLock:
    """An exclusive lock on a run directory (``flock``: released by the kernel when the process ends)."""

    def __init__(self, run: Path):
        self.path = Path(run) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        # forked children (data-loader workers, prepare's pool) share the lock: they close their copy, so
        # the lock lives exactly as long as this process
        os.register_at_fork(after_in_child=self._close_in_child)
        return True

    def _close_in_child(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str:
        try:
            pid, host = self.path.read_text().split()[:2]
            return f"pid {pid} on {host}"
        except (OSError, ValueError):
            return "another process"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _check_resumed_dir(config, run: Path) -> None:
    """``resume=A`` makes ``A`` the run dir (conf/hydra/default.yaml); a ``hydra.run.dir=B`` given as well
    replaces that, and the run being resumed (``A``, or the newest for ``resume=last``) is named."""
    from lmguide.runs.errors import LmguideError
    from lmguide.runs.resume import check_same_run_dir, is_resume, resume_dir

    task, resume, ckpt = config.get("task_name"), config.get("resume"), config.get("ckpt_path")
    try:
        if is_resume(task, resume, ckpt):
            from omegaconf import OmegaConf

            log_dir = OmegaConf.select(config, "paths.log_dir", default="logs")  # only resume=last needs it
            runs_root = Path(str(log_dir)) / task / "runs"  # as the run.dir resolver is given
            check_same_run_dir(resume_dir(task, resume, ckpt, str(runs_root)), run, resume)
    except LmguideError as err:
        fail(str(err))


class RunDirGuard(Callback):
    """See the module docstring."""

    def __init__(self) -> None:
        self.lock: RunLock | None = None

    def on_run_start(self, config, **kwargs) -> None:
        if config.get("task_name") != "train" or not _rank_zero():
            return
        run = Path(str(config.hydra.run.dir)).expanduser()
        _check_resumed_dir(config, run)  # before anything is created in a run dir that is not the run's
        try:
            run.mkdir(parents=True, exist_ok=True)
            lock = RunLock(run)
            got = lock.acquire()
        except OSError as err:
            fail(
                f"run directory {run} cannot be created or written ({err.strerror or err}): "
                "choose another with hydra.run.dir=<folder> (or paths.log_dir=<folder>)"
            )
        if not got:
            fail(
                f"run directory {run} is in use by another lmguide run ({lock.holder()}): wait for it to "
                "end, or choose another hydra.run.dir"
            )
        self.lock = lock
        from lmguide.runs.requeue import restarts
        from lmguide.runs.resume import is_resume

        if is_resume(config.task_name, config.get("resume"), config.get("ckpt_path")) or restarts():
            return  # a resumed run, or a requeued SLURM job going on in its own directory
        state = holds_run(run)
        if state and not config.get("overwrite"):
            hint = "resume=<that dir> to continue it, " if state == "interrupted" else ""
            fail(
                f"run directory {run} already holds {'an' if state == 'interrupted' else 'a'} {state} run: "
                f"use {hint}another hydra.run.dir, "
                "or overwrite=true to replace it"
            )
        if state:
            for name in RUN_OUTPUTS:
                p = run / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()

    def on_run_end(self, config, **kwargs) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
