"""The worker pool and progress of the prepare pass, and the shard of a process under torchrun / SLURM."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


def shard_from_env() -> tuple[int, int]:
    """``(rank, world_size)`` of this process under torchrun/DDP or SLURM; ``(0, 1)`` otherwise."""
    for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in os.environ and world_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[world_var])
    return 0, 1


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Workers:
    """Runs tasks in this process (1 worker) or in one spawn pool, started on first use and kept for
    both passes (landmarks, then masks): starting a worker (imports, MediaPipe graphs) costs seconds."""

    def __init__(self, n: int):
        self.n, self._pool = n, None

    def map(self, fn: Callable, tasks: list) -> Iterator:
        """``fn`` over ``tasks``; results in the order they finish."""
        if self.n <= 1 or len(tasks) <= 1:
            yield from map(fn, tasks)
            return
        if self._pool is None:
            # spawn, not fork: the parent may hold torch/OpenMP threads or MediaPipe graphs a fork breaks
            self._pool = mp.get_context("spawn").Pool(self.n)
        yield from self._pool.imap_unordered(fn, tasks, chunksize=1)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._pool is not None:
            if exc_type is None:
                self._pool.close()
            else:
                self._pool.terminate()
            self._pool.join()


class Progress:
    """A rich progress bar (files, frames/s, ETA) on a terminal; a log line every 10 % otherwise."""

    def __init__(self, total: int, what: str, enabled: bool = True):
        self.total, self.what, self.done, self.frames = total, what, 0, 0
        self.t0 = time.perf_counter()
        self._next_log = 0.1
        self._bar = None
        if enabled and sys.stderr.isatty() and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[frames]} frames, {task.fields[fps]:.1f} frames/s"),
                TimeRemainingColumn(),
            )
            self._task = self._bar.add_task(what, total=total, frames=0, fps=0.0)
            self._bar.start()

    @property
    def fps(self) -> float:
        return self.frames / max(time.perf_counter() - self.t0, 1e-9)

    def advance(self, frames: int) -> None:
        self.done += 1
        self.frames += frames
        if self._bar is not None:
            self._bar.update(self._task, advance=1, frames=self.frames, fps=self.fps)
        elif self.done / self.total >= self._next_log or self.done == self.total:
            self._next_log = (int(10 * self.done / self.total) + 1) / 10
            left = (self.total - self.done) * (time.perf_counter() - self.t0) / self.done
            log.info(
                "%s: %d/%d files, %d frames, %.1f frames/s, ETA %.0f s",
                self.what, self.done, self.total, self.frames, self.fps, left,
            )  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
