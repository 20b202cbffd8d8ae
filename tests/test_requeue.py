"""Preemption on SLURM (lmguide/runs/requeue.py): the requeue signal requeues the job, and the requeued job
goes on from its last.ckpt in its own directory, ending with the weights of an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmguide.runs.requeue import job_run_dir, requeued_state, restarts, slurm_job
from lmguide.runs.runtime import ROOT_DIR

from .conftest import FAST_DATA, cli_env, run_cli

# 2 batches per epoch, 3 epochs, one validation batch, no sanity check, overlays or test: about as small
# as a run with a last.ckpt in the middle gets
STEPS = 6
RUN = ["attention.num_maps=2", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=false"]
RUN += [*FAST_DATA, f"trainer.max_steps={STEPS}", "trainer.num_sanity_val_steps=0"]
RUN += ["callbacks.attention_overlay=null", "callbacks.rich_progress_bar=null", "trainer.log_every_n_steps=1"]

JOB = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1"}
JOB |= {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}


# --------------------------------------------------------------------------- units (fast)


def test_slurm_job_and_restarts():
    assert slurm_job({}) is None and restarts({}) == 0
    assert slurm_job(JOB) == "4242" and restarts(JOB) == 0
    assert slurm_job({**JOB, "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "3"}) == "10_3"
    assert slurm_job({**JOB, "SLURM_JOB_NAME": "interactive"}) is None  # salloc: many runs, one job
    assert restarts({**JOB, "SLURM_RESTART_COUNT": "2"}) == 2
    assert restarts({"SLURM_RESTART_COUNT": "2"}) == 0  # no job around it


def test_a_batch_jobs_run_dir_is_named_after_the_job(tmp_path):
    fresh = str(tmp_path / "runs" / "2026-12-06_00-00-00")
    assert job_run_dir("train", str(tmp_path / "runs"), fresh, JOB) == str(tmp_path / "runs" / "slurm-4242")
    assert job_run_dir("train", str(tmp_path / "runs"), fresh, {}) == fresh
    assert job_run_dir("eval", str(tmp_path / "runs"), fresh, JOB) == fresh


def test_requeued_state(tmp_path):
    again = {**JOB, "SLURM_RESTART_COUNT": "1"}
    assert requeued_state(tmp_path, JOB) is None  # first start
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"x")
    assert requeued_state(tmp_path, again) == "restart" and not (tmp_path / "hpc_ckpt_1.ckpt").exists()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert requeued_state(tmp_path, again) == "resume"
    (tmp_path / "metrics.json").write_text("{}")
    assert requeued_state(tmp_path, again) == "finished"


# --------------------------------------------------------------------------- end to end (slow)


@pytest.fixture(scope="module")
def reference(cache_dir, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    run = tmp_path_factory.mktemp("ref") / "run"
    proc = run_cli("lmguide.train", [*RUN, f"hydra.run.dir={run}"], run.parent, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def _assert_same_run(run: Path, ref: Path) -> None:
    """Same val metrics, and last.ckpt holds the same step, weights (centers too) and Adam state."""
    import json

    a, b = (json.loads((r / "metrics.json").read_text()) for r in (run, ref))
    a.pop("wall_time_s"), b.pop("wall_time_s")
    assert a == pytest.approx(b, abs=1e-6)
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (run, ref))
    assert a["global_step"] == b["global_step"] == STEPS and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(v, b["state_dict"][k], rtol=0, atol=1e-6, msg=k)
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(sa[i][k], sb[i][k], rtol=0, atol=1e-7)


def _fake_scontrol(tmp_path: Path) -> dict[str, str]:
    """``scontrol`` on PATH that records its arguments and, as SLURM does on a requeue, sends SIGTERM to
    the job (the process that called it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\nkill -TERM "$PPID"\n')
    (bin_dir / "scontrol").chmod(0o755)
    log = tmp_path / "scontrol.log"
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "SCONTROL_LOG": str(log), "PYTHONPATH": str(ROOT_DIR)}


def _stop_once_checkpointed(cmd, env, cwd, last: Path, sig) -> tuple[int, str]:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    time.sleep(0.2)  # past the write of last.ckpt, into the next epoch
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


def _requeued(cmd, env, cwd) -> subprocess.CompletedProcess:
    """The same command started again by SLURM after a requeue."""
    requeued = {**env, "SLURM_RESTART_COUNT": "1"}
    return run_cli(cmd[2], cmd[3:], cwd, Path(env["LMGUIDE_CACHE_DIR"]), env=requeued)


@pytest.mark.slow
def test_sigusr1_requeues_a_sweep_job_that_resumes_in_its_own_dir(reference, cache_dir, tmp_path):
    """A multirun job under SLURM gets SIGUSR1: Lightning's SLURMEnvironment calls ``scontrol requeue`` and
    SLURM's SIGTERM stops the job (143). Started again by SLURM (SLURM_RESTART_COUNT=1, same command and
    sweep dir), the job resumes from its last.ckpt in its own directory and ends where an uninterrupted
    run ends: same step, weights, Adam state and metrics."""
    sweep = tmp_path / "sweep"
    job = sweep / "0"
    env = cli_env(cache_dir, {**JOB, **_fake_scontrol(tmp_path)})
    cmd = [sys.executable, "-m", "lmguide.train", "-m", *RUN, f"hydra.sweep.dir={sweep}"]
    code, err = _stop_once_checkpointed(cmd, env, tmp_path, job / "checkpoints" / "last.ckpt", signal.SIGUSR1)
    assert code == 143, err[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    assert (job / "INTERRUPTED").exists() and not (job / "metrics.json").exists()
    stopped_at = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < stopped_at < STEPS

    again = _requeued(cmd, env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {job}" in again.stderr + again.stdout
    assert (job / "csv" / "requeued-1" / "metrics.csv").exists()  # the first attempt's CSV is kept
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0"]
    assert not list(job.glob("hpc_ckpt_*")) and not (job / "INTERRUPTED").exists()
    _assert_same_run(job, reference)


@pytest.mark.slow
def test_sigterm_then_requeue_resumes_a_single_run_in_its_job_dir(reference, cache_dir, tmp_path):
    """A run (no -m, no hydra.run.dir) in a SLURM batch job writes to runs/slurm-<job id>; stopped by SIGTERM
    and started again as the requeued job, it finds that directory, resumes there (the run-dir guard lets
    it in) and matches the uninterrupted run."""
    logs = tmp_path / "logs"
    run = logs / "train" / "runs" / "slurm-4242"
    env = cli_env(cache_dir, {**JOB, **_fake_scontrol(tmp_path)})
    cmd = [sys.executable, "-m", "lmguide.train", *RUN, f"paths.log_dir={logs}"]
    code, err = _stop_once_checkpointed(cmd, env, tmp_path, run / "checkpoints" / "last.ckpt", signal.SIGTERM)
    assert code == 143, err[-3000:]
    assert not (run / "metrics.json").exists()
    again = _requeued(cmd, env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p.name for p in (logs / "train" / "runs").iterdir()] == ["slurm-4242"]
    assert f"resuming {run}" in again.stderr + again.stdout
    assert (run / "csv" / "requeued-1" / "metrics.csv").exists()
    _assert_same_run(run, reference)
