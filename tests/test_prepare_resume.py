"""prepare survives kill -9 and concurrent runs: the resumed index equals an uninterrupted one."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmguide.data.demo import fetch_demo_media

ARGS = ["data.faces.frames_per_video=4", "progress=false"]


def _env(cache: Path) -> dict:
    return {**os.environ, "LMGUIDE_CACHE_DIR": str(cache), "WANDB_MODE": "offline"}


def _cmd(run_dir: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "lmguide.prepare", *ARGS, f"workers={workers}", f"hydra.run.dir={run_dir}"]


def _prepare(cache: Path, run_dir: Path, workers: int = 1) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        _cmd(run_dir, workers), env=_env(cache), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _is_temp(p: Path) -> bool:
    return p.name.startswith(".") and not p.name.startswith(".complete")


def _snapshot(cache: Path) -> dict[str, str]:
    """sha1 of every file of the demo index (paths relative to the crop folder).

    Temp files a killed write leaves behind (``.<name>.<random>``, never read) are left out here and
    checked separately: they are the only trace a kill may leave.
    """
    (work,) = (cache / "demo" / "index").iterdir()
    return {
        str(p.relative_to(work)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(work.rglob("*"))
        if p.is_file() and not _is_temp(p)
    }


@pytest.fixture(scope="module")
def media_cache(cache_dir, tmp_path_factory) -> Path:
    """A cache holding only the demo media (copied from the session cache: nothing is fetched twice)."""
    import shutil

    fetch_demo_media(cache_dir)
    cache = tmp_path_factory.mktemp("media_only")
    shutil.copytree(cache_dir / "demo" / "media", cache / "demo" / "media")
    shutil.copytree(cache_dir / "demo" / "downloads", cache / "demo" / "downloads", dirs_exist_ok=True)
    return cache


@pytest.fixture(scope="module")
def reference(media_cache, tmp_path_factory) -> dict[str, str]:
    """The uninterrupted run's files."""
    import shutil

    cache = tmp_path_factory.mktemp("ref")
    shutil.copytree(media_cache, cache, dirs_exist_ok=True)
    _prepare(cache, tmp_path_factory.mktemp("ref_run"))
    return _snapshot(cache)


def _fresh(media_cache: Path, tmp_path: Path) -> Path:
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(media_cache, cache)
    return cache


def _kill_after(cache: Path, run_dir: Path, n_done: int, workers: int) -> int:
    """Start prepare, SIGKILL it once ``n_done`` source files are recorded; returns how many were."""
    proc = subprocess.Popen(
        _cmd(run_dir, workers),
        env=_env(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the pool workers die with it (the whole process group is killed)
    )
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        done = sum(1 for _ in (cache / "demo" / "index").glob("*/done/**/*.json"))
        if done >= n_done:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "prepare finished before it could be killed: raise the frame count"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return done


@pytest.mark.parametrize(("n_done", "workers"), [(3, 1), (11, 2)])
def test_kill_9_then_resume_equals_an_uninterrupted_run(media_cache, reference, tmp_path, n_done, workers):
    cache = _fresh(media_cache, tmp_path)
    done = _kill_after(cache, tmp_path / "killed", n_done, workers)
    assert not list((cache / "demo" / "index").glob("*/manifests/*.csv"))  # killed before the end

    proc = _prepare(cache, tmp_path / "resumed", workers)
    resumed = re.search(r"(\d+) of (\d+) files already indexed", proc.stdout + proc.stderr)
    assert resumed and int(resumed[1]) >= done and int(resumed[2]) == 20  # it resumed, not restarted
    # every crop, landmark file, mask, done record and the manifest, byte for byte
    assert _snapshot(cache) == reference


def test_two_concurrent_prepares_share_the_cache(media_cache, reference, tmp_path):
    cache = _fresh(media_cache, tmp_path)
    procs = [
        subprocess.Popen(_cmd(tmp_path / f"run{i}", 1), env=_env(cache), stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    assert _snapshot(cache) == reference


def test_sharded_prepare_writes_the_manifest_once_all_shards_are_done(media_cache, reference, tmp_path):
    cache = _fresh(media_cache, tmp_path)
    env = _env(cache)
    first = subprocess.run(
        [*_cmd(tmp_path / "s0", 1), "shard=0/2"], env=env, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0 and "other shards are still running" in first.stdout
    assert not list((cache / "demo" / "index").glob("*/manifests/*.csv"))
    second = subprocess.run(
        [*_cmd(tmp_path / "s1", 1)], env={**env, "SLURM_PROCID": "1", "SLURM_NTASKS": "2"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-2000:]
    assert "shard 1/2" in second.stdout and "manifest:" in second.stdout
    assert _snapshot(cache) == reference
