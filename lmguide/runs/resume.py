"""Continue an interrupted training run in its own directory.

``python -m lmguide.train resume=<run dir>`` (or ``resume=last``: the newest run under
``logs/train/runs`` that holds ``checkpoints/last.ckpt``) makes that directory the Hydra run dir
again, re-composes the run's own config from the overrides recorded in its last checkpoint (plus any
new ones on the command line, e.g. a higher ``trainer.max_steps``), and fits from ``last.ckpt``: weights,
optimizer, scheduler, center buffers, step and epoch counters, the best-checkpoint record and the
callbacks' states. The global RNGs and the data order are functions of ``(seed, epoch)``
(:class:`~lmguide.training.callbacks.EpochSeed`, :class:`~lmguide.data.datamodule.EpochShuffle`), so the
resumed run repeats the uninterrupted one. The resumed attempt's Hydra files go to ``.hydra/resumed-<time>/``;
the run's original ``.hydra/`` files stay as they were.
"""

from __future__ import annotations

from pathlib import Path

from lmguide.runs.errors import ConfigError, LmguideError

LAST = Path("checkpoints") / "last.ckpt"


class ResumeError(LmguideError, RuntimeError):
    """A ``resume=`` target without a usable last checkpoint."""


def is_resume(task: str | None, resume: str | None, ckpt_path: str | None) -> bool:
    """True when a training command asks to continue a run (``resume=<run dir>|last``).

    ``ckpt_path`` is a checkpoint *file* to fit from in a new run directory; ``ckpt_path=last`` (which
    once meant ``resume=last``) is refused with the key to use instead."""
    if task == "train" and ckpt_path == "last":
        raise ConfigError(
            "ckpt_path=last is not a checkpoint file: to continue the newest interrupted run in its own "
            "directory use resume=last (ckpt_path=<file.ckpt> fits from a checkpoint in a new run dir)"
        )
    return task == "train" and bool(resume)


def resume_dir(task: str | None, resume: str | None, ckpt_path: str | None, runs_root: str) -> Path | None:
    """The run directory to continue, or None for a fresh run.

    ``resume``: a run directory, or ``last``: the newest directory under
    ``runs_root`` whose ``checkpoints/last.ckpt`` exists (by the checkpoint's modification time)."""
    if not is_resume(task, resume, ckpt_path):
        return None
    target = str(resume) if resume else "last"
    if target == "last":
        root = Path(runs_root).expanduser()
        found = sorted(root.glob(f"*/{LAST}"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
        if not found:
            raise ResumeError(f"resume=last: no run under {root} has {LAST} to continue from")
        return found[-1].parent.parent.resolve()
    run = Path(target).expanduser().resolve()
    if not run.is_dir():
        raise ResumeError(f"resume={target}: {run} is not a run directory")
    if not (run / LAST).is_file():
        raise ResumeError(
            f"resume={target}: {run / LAST} does not exist (a run writes it at its first validation; "
            "an earlier kill leaves nothing to resume: start the run again)"
        )
    return run


def check_same_run_dir(target: Path, run: str | Path, resume: str) -> None:
    """Refuse ``resume=A hydra.run.dir=B``: a run is continued in its own directory ``A`` (``target``,
    from :func:`resume_dir`), and a ``hydra.run.dir`` given on the command line replaces that."""
    run = Path(run).expanduser().resolve()
    if run != target:
        raise ResumeError(
            f"resume={resume} continues the run in its own directory {target}, but hydra.run.dir={run} "
            f"names another: drop hydra.run.dir (the resumed run writes into {target}), or to start a new "
            f"run in {run} from its weights give ckpt_path={target / LAST} instead of resume="
        )


def run_dir(task: str | None, resume: str | None, ckpt_path: str | None, runs_root: str, fresh: str) -> str:
    """``hydra.run.dir``: the resumed run's directory, else ``fresh`` (a new timestamped one)."""
    found = resume_dir(task, resume, ckpt_path, runs_root)
    return str(found) if found else fresh


def hydra_subdir(task: str | None, resume: str | None, ckpt_path: str | None, stamp: str) -> str:
    """``hydra.output_subdir``: a resumed attempt keeps its Hydra files apart from the run's own."""
    return f".hydra/resumed-{stamp}" if is_resume(task, resume, ckpt_path) else ".hydra"


def restart_after_epoch_end(trainer) -> None:
    """Make a fit restored from an end-of-epoch ``last.ckpt`` go on with the next epoch when
    validation runs every N batches across epochs (``check_val_every_n_epoch=null``).

    Lightning 2.6 leaves a restored epoch through the branch that expects the validation which ends
    every epoch in the per-epoch mode; with validation every N batches the epoch's last batch is
    usually not a validation batch, so the restored epoch instead draws one more batch from a fresh
    loader (an extra step on other samples, and the next epoch's start hooks and seeding are skipped).
    Here the restored, already finished epoch takes that branch as in the per-epoch mode: no batch and
    no validation, then the next epoch starts as in the uninterrupted run. The per-epoch mode is
    unchanged (its last batch is always a validation batch)."""
    loop = trainer.fit_loop.epoch_loop
    scheduled = loop._should_check_val_fx

    def should_check_val(data_fetcher) -> bool:
        if loop.restarting and loop.restarted_on_last and loop._num_ready_batches_reached():
            return True  # taken once, in the restored epoch, then skipped (`_skip_next_val`)
        return scheduled(data_fetcher)

    loop._should_check_val_fx = should_check_val


#: the marker a stopped run leaves in its directory (removed when a resume of it finishes)
INTERRUPTED = "INTERRUPTED"
#: exit codes of a run stopped by a signal, as a shell reports a process the signal killed
SIGNAL_EXIT = {"SIGTERM": 143, "SIGINT": 130}


def interrupted_exit(stop: SystemExit, trainer, out_dir: Path) -> SystemExit:
    """What a run exits with when Lightning's trainer stopped it: SIGTERM (Lightning's
    ``SIGTERMException``, a SystemExit without a code, read as success) or Ctrl-C (``sys.exit(1)``) give
    143 or 130, after marking the run dir :data:`INTERRUPTED` and saying how to go on; submitit's exit
    after it requeued the job (``sys.exit(-1)``) is marked as such and kept; any other exit is returned
    as it was."""
    import sys

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if not getattr(trainer, "interrupted", False):
        return stop
    sigterm = isinstance(stop, SIGTERMException)
    requeued = not sigterm and stop.code == -1  # submitit's exit once it requeued the job on its signal
    why = "SIGTERM" if sigterm else "a SLURM requeue (submitit)" if requeued else "SIGINT"
    step = int(getattr(trainer, "global_step", 0))
    last = out_dir / LAST
    kept = f"last.ckpt holds the last validation's state ({last})" if last.exists() else "no last.ckpt yet"
    how = (
        "the requeued job goes on from it"
        if requeued
        else f"go on with `python -m lmguide.train resume={out_dir}`"
    )
    line = f"stopped by {why} at step {step}: {kept}; {how}"
    (out_dir / INTERRUPTED).write_text(line + "\n")
    print(f"error: {line}", file=sys.stderr, flush=True)
    return stop if requeued else SystemExit(SIGNAL_EXIT[why])
