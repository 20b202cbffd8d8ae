"""Resuming training: ``resume=<run dir>`` after a stop or a ``kill -9`` ends where an uninterrupted run
ends (same weights, optimizer state, centers, metrics), in the run's own directory, losing nothing."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from lmguide.data.datamodule import EpochShuffle
from lmguide.runs.errors import ConfigError
from lmguide.runs.resume import ResumeError, hydra_subdir, is_resume, resume_dir
from lmguide.training.checkpoint import AtomicCheckpointIO, remove_stale_temps

from .conftest import KILL_DATA, kill_during_training, run_cli

# 2 batches per epoch, 4 epochs, 2 loader workers (their seeds must follow the epoch too)
RUN = [
    "attention.num_maps=2",
    "+trainer.limit_train_batches=2",
    *KILL_DATA,
]
STEPS = 8


# --------------------------------------------------------------------------- units (fast)


def test_epoch_shuffle_is_a_function_of_seed_and_epoch():
    a, b = EpochShuffle(50, seed=3), EpochShuffle(50, seed=3)
    first = list(a)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    torch.manual_seed(123)  # the global RNG plays no part
    assert list(b) == first
    a.set_epoch(1)
    second = list(a)
    assert second != first
    # a fresh sampler put straight at epoch 1 (a resumed run) draws the same order and worker seeds
    c = EpochShuffle(50, seed=3)
    c.set_epoch(1)
    assert list(c) == second
    state = c.generator.get_state()
    c.set_epoch(1)  # Lightning sets the same epoch again after the first iterator drew: no re-seed
    assert torch.equal(c.generator.get_state(), state)
    assert list(EpochShuffle(50, seed=4)) != first


def test_epoch_shuffle_follows_the_trainers_epoch_not_lightnings_argument():
    epoch = {"now": 0}
    s = EpochShuffle(20, seed=0, epoch_fn=lambda: epoch["now"])
    epoch["now"] = 2
    s.set_epoch(3)  # after a resume Lightning passes one more than the epoch it runs
    assert s.epoch == 2 and list(s) == list(EpochShuffle(20, seed=0, epoch_fn=lambda: 2))


def test_resume_dir_finds_the_run_or_says_why_not(tmp_path):
    runs = tmp_path / "runs"
    assert resume_dir("train", None, None, str(runs)) is None
    assert resume_dir("eval", "last", "last", str(runs)) is None  # only training resumes
    with pytest.raises(ResumeError, match="no run under .* has checkpoints/last.ckpt"):
        resume_dir("train", "last", None, str(runs))
    with pytest.raises(ResumeError, match="is not a run directory"):
        resume_dir("train", str(tmp_path / "nope"), None, str(runs))
    old, new, empty = runs / "a", runs / "b", runs / "c"
    for d in (old, new):
        (d / "checkpoints").mkdir(parents=True)
        (d / "checkpoints" / "last.ckpt").write_bytes(b"x")
        time.sleep(0.02)
    empty.mkdir()
    with pytest.raises(ResumeError, match="last.ckpt does not exist .* start the run again"):
        resume_dir("train", str(empty), None, str(runs))
    os.utime(old / "checkpoints" / "last.ckpt")  # the newest checkpoint wins, not the newest name
    assert resume_dir("train", "last", None, str(runs)) == old.resolve()
    with pytest.raises(ConfigError, match="use resume=last"):  # one name: ckpt_path=last is refused
        resume_dir("train", None, "last", str(runs))
    assert resume_dir("train", str(new), None, str(runs)) == new.resolve()
    assert is_resume("train", "last", None) and not is_resume("train", None, "x.ckpt")
    assert hydra_subdir("train", str(new), None, "T") == ".hydra/resumed-T"
    assert hydra_subdir("train", None, None, "T") == ".hydra"


def test_a_checkpoint_write_that_fails_midway_leaves_the_previous_one(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, path)

    def disk_full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left
    # a kill -9 cannot clean up: its temp file is removed when the run is resumed
    (tmp_path / ".last.ckpt.tmp-4242").write_bytes(b"half")
    assert [p.name for p in remove_stale_temps(tmp_path)] == [".last.ckpt.tmp-4242"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_resume_of_a_run_killed_before_its_first_checkpoint_is_refused(cache_dir, tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    proc = run_cli("lmguide.train", [f"resume={run}"], tmp_path, cache_dir)
    assert proc.returncode != 0
    assert "last.ckpt does not exist" in proc.stderr and str(run) in proc.stderr
    assert not (run / "checkpoints").exists()  # nothing started


def test_resume_with_another_run_dir_names_the_resumed_run_and_the_fix(cache_dir, tmp_path):
    """``resume=A hydra.run.dir=B`` used to report B's missing last.ckpt, as if B were being resumed."""
    run, other = tmp_path / "run", tmp_path / "other"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"never read: refused before")
    proc = run_cli("lmguide.train", [f"resume={run}", f"hydra.run.dir={other}"], tmp_path, cache_dir)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and line.startswith("error: "), proc.stderr[-3000:]
    assert f"resume={run} continues the run in its own directory {run.resolve()}" in line
    assert "drop hydra.run.dir" in line and f"ckpt_path={run.resolve() / 'checkpoints' / 'last.ckpt'}" in line
    assert not other.exists()  # nothing written where the run is not
    # a target without last.ckpt: the path named is the target's, not the other run dir's
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("lmguide.train", [f"resume={empty}", f"hydra.run.dir={other}"], tmp_path, cache_dir)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and f"{empty / 'checkpoints' / 'last.ckpt'} does not exist" in line
    assert str(other) not in line and not other.exists()


class _Payload:  # any class: a weights_only load must refuse to build it
    pass


def test_resume_refuses_a_tampered_last_checkpoint(cache_dir, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(
        {"state_dict": {}, "lmguide_config": {}, "evil": _Payload()}, run / "checkpoints" / "last.ckpt"
    )
    proc = run_cli("lmguide.train", [f"resume={run}"], tmp_path, cache_dir)
    assert proc.returncode != 0
    assert f"refusing {run / 'checkpoints' / 'last.ckpt'}" in proc.stderr and "weights_only" in proc.stderr


# --------------------------------------------------------------------------- end to end (slow)


def _train(run: Path, extra: list[str], cache_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    proc = run_cli("lmguide.train", [*RUN, *extra, f"hydra.run.dir={run}"], cwd, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _resume(run: Path, extra: list[str], cache_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    proc = run_cli("lmguide.train", [f"resume={run}", *extra], cwd, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _metrics(run: Path) -> dict[str, float]:
    m = json.loads((run / "metrics.json").read_text())
    m.pop("wall_time_s")
    return m


def _assert_same_run(run: Path, ref: Path) -> None:
    """Same metrics, and the last checkpoint holds the same step, weights, centers and Adam state."""
    assert _metrics(run) == pytest.approx(_metrics(ref), abs=1e-6)
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (run, ref))
    assert a["global_step"] == b["global_step"] == STEPS and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(v, b["state_dict"][k], rtol=0, atol=1e-6, msg=k)
    assert a["state_dict"]["center.centers"].abs().sum() > 0
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(sa[i][k], sb[i][k], rtol=0, atol=1e-7)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert a["lmguide_plateau"]["last_epoch"] == STEPS // 2  # stepped after every epoch, none missed
    assert a["lmguide_plateau"] == b["lmguide_plateau"]
    # the callbacks' states (best-checkpoint record and score, min-lr stop), run dirs aside; a
    # checkpoint's current_score is the score of the validation just run (none yet after a resume)
    states = [
        {k: {n: v for n, v in st.items() if n != "current_score"} for k, st in c["callbacks"].items()}
        for c in (a, b)
    ]
    norm = [
        json.dumps(st, default=str, sort_keys=True).replace(str(r), "RUN")
        for st, r in zip(states, (run, ref), strict=True)
    ]
    assert norm[0] == norm[1] and "best.ckpt" in norm[0]


@pytest.fixture(scope="module")
def reference(cache_dir, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    run = tmp_path_factory.mktemp("ref") / "run"
    _train(run, [f"trainer.max_steps={STEPS}"], cache_dir, run.parent)
    return run


@pytest.mark.slow
def test_stopped_run_resumed_with_more_steps_equals_an_uninterrupted_run(reference, cache_dir, tmp_path):
    run = tmp_path / "run"
    _train(run, ["trainer.max_steps=4"], cache_dir, tmp_path)
    first_csv = (run / "csv" / "metrics.csv").read_text()
    overrides = (run / ".hydra" / "overrides.yaml").read_text()
    proc = _resume(run, [f"trainer.max_steps={STEPS}"], cache_dir, tmp_path)
    assert "resuming" in proc.stderr + proc.stdout

    _assert_same_run(run, reference)
    # the run's own records are kept: the first CSV, its Hydra overrides; the resumed part beside them
    assert (run / "csv" / "metrics.csv").read_text() == first_csv
    (resumed_hydra,) = (run / ".hydra").glob("resumed-*")
    assert (run / ".hydra" / "overrides.yaml").read_text() == overrides
    assert f"trainer.max_steps={STEPS}" in (resumed_hydra / "overrides.yaml").read_text()
    assert list((run / "csv" / resumed_hydra.name).glob("metrics.csv"))
    # later checkpoints still rebuild the model with the run's own choices (+ the new max_steps)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    recorded = ckpt["lmguide_overrides"]["overrides"]
    assert "attention.num_maps=2" in recorded and f"trainer.max_steps={STEPS}" in recorded
    assert not any(o.startswith("resume=") for o in recorded)
    assert yaml.safe_load(overrides) == recorded[: len(yaml.safe_load(overrides))]


@pytest.mark.slow
def test_kill_9_during_training_then_resume_equals_an_uninterrupted_run(reference, cache_dir, tmp_path):
    rng = random.Random(8)
    table = []
    # in the 2nd of 4 epochs (the mid-epoch kill test of test_workers_and_validation kills in the 3rd)
    for trial, min_step in enumerate((2,)):
        run = tmp_path / f"run{trial}"
        delay = rng.uniform(0.0, 1.0)  # an epoch (2 steps + validation) takes a few seconds
        step = kill_during_training(
            [*RUN, f"trainer.max_steps={STEPS}"], run, tmp_path, cache_dir, min_step, delay
        )
        assert 0 < step < STEPS
        assert not (run / "metrics.json").exists()
        _resume(run, [], cache_dir, tmp_path)
        _assert_same_run(run, reference)
        table.append((trial, f"{delay:.2f}", step))
    print("\ntrial | kill delay after that last.ckpt (s) | last.ckpt step at kill | recovered")
    for row in table:
        print(" | ".join(map(str, row)) + " | yes")


def test_a_resume_with_no_step_left_is_refused_and_keeps_the_results(trained_ckpt, cache_dir, tmp_path):
    """A finished run resumed at its own max_steps would train nothing and overwrite metrics.json with
    the few keys of a run that tested nothing: refused in one line, every file left as it was."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained_ckpt.parent.parent, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    proc = run_cli(
        "lmguide.train", [f"resume={run}", "test=false", f"trainer.max_steps={step}"], tmp_path, cache_dir
    )
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and f"at step {step} and trainer.max_steps={step}" in line
    kept = {p: p.read_bytes() for p in before if p.name != ".lmguide.lock"}  # the lock names its holder
    assert kept == {p: b for p, b in before.items() if p.name != ".lmguide.lock"}
    assert (run / "metrics.json").read_bytes() == before[run / "metrics.json"]


@pytest.mark.slow
def test_sigterm_stops_the_run_non_zero_marks_it_and_resume_goes_on(cache_dir, tmp_path):
    """SIGTERM (a scheduler's stop) used to end the run with exit code 0 and no trace: now 143, an
    INTERRUPTED marker with the way on, and a resume that finishes removes the marker. (Ctrl-C takes
    the same path with 130: :func:`lmguide.runs.resume.interrupted_exit`.)"""
    sig = "SIGTERM"
    import signal
    import subprocess
    import sys
    import time

    from .conftest import FAST_DATA, cli_env

    run = tmp_path / "run"
    args = [*FAST_DATA, "attention.num_maps=2", "trainer.max_steps=400", "trainer.val_check_interval=1"]
    args += ["trainer.check_val_every_n_epoch=null", "+trainer.limit_val_batches=1", f"hydra.run.dir={run}"]
    cmd = [sys.executable, "-m", "lmguide.train", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(cache_dir), stderr=subprocess.PIPE, text=True)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    marker = (run / "INTERRUPTED").read_text()
    assert marker.startswith(f"stopped by {sig} at step ") and f"resume={run}" in marker
    assert f"error: {marker.strip()}" in err and not (run / "metrics.json").exists()
    step = torch.load(last, weights_only=True)["global_step"]
    more = [f"resume={run}", f"trainer.max_steps={step + 1}", "test=false"]
    done = run_cli("lmguide.train", more, tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (run / "INTERRUPTED").exists() and (run / "metrics.json").exists()


@pytest.mark.slow
def test_sigterm_in_a_sweep_names_the_jobs_that_did_not_run(cache_dir, tmp_path):
    """A multirun stopped by SIGTERM in its first job: exit 143, the job marked as any run, then one line
    with the jobs that never ran and how to run them; the sweep report lists them too."""
    import signal
    import sys

    from lmguide.runs.runtime import ROOT_DIR
    from lmguide.sweep_report import report

    from .conftest import FAST_DATA, cli_env

    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1,2", *FAST_DATA, "attention.num_maps=2", "trainer.max_steps=400"]
    args += [
        "trainer.val_check_interval=1",
        "trainer.check_val_every_n_epoch=null",
        "+trainer.limit_val_batches=1",
    ]
    cmd = [sys.executable, "-m", "lmguide.train", *args, f"hydra.sweep.dir={sweep}"]
    env = cli_env(cache_dir, {"PYTHONPATH": str(ROOT_DIR)})  # this checkout's lmguide, whatever is installed
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert (sweep / "0" / "INTERRUPTED").read_text().startswith("stopped by SIGTERM at step ")
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        "error: sweep stopped by SIGTERM at job 0 of 3; not run: #1 seed=1, #2 seed=2 ("
    ), line
    assert f"hydra.mode=RUN hydra.run.dir={sweep}/<#>`" in line and not (sweep / "1").exists()
    table = report(sweep)["markdown"].read_text()
    assert "3 jobs, 0 finished, 2 never started" in table and "job #2 (seed=2 " in table
    assert f"- stopped: `{sweep / '0'}` (seed=0 " in table


def test_interrupted_exit_codes_and_marker(tmp_path, capsys):
    from types import SimpleNamespace

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lmguide.runs.resume import INTERRUPTED, interrupted_exit

    stopped = SimpleNamespace(interrupted=True, global_step=5)
    assert interrupted_exit(SIGTERMException(), stopped, tmp_path).code == 143
    assert "stopped by SIGTERM at step 5: no last.ckpt yet" in (tmp_path / INTERRUPTED).read_text()
    assert interrupted_exit(SystemExit(1), stopped, tmp_path).code == 130  # Lightning's Ctrl-C exit
    assert (tmp_path / INTERRUPTED).read_text().startswith("stopped by SIGINT at step 5")
    assert capsys.readouterr().err.count("error: stopped by ") == 2
    requeued = SystemExit(-1)  # submitit, on its signal, after `scontrol requeue` (lmguide/runs/requeue.py)
    assert interrupted_exit(requeued, stopped, tmp_path) is requeued
    marker = (tmp_path / INTERRUPTED).read_text()
    assert marker.startswith("stopped by a SLURM requeue (submitit) at step 5")
    assert "the requeued job goes on from it" in marker
    capsys.readouterr()
    other = SystemExit(3)
    assert interrupted_exit(other, SimpleNamespace(interrupted=False), tmp_path) is other
