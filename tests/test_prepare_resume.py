"""prepare survives kill -9 and concurrent runs: the resumed index equals an uninterrupted one."""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lmguide.runs.runtime import CONF_DIR

ARGS = ["data.faces.frames_per_video=4", "progress=false"]
#: the demo's source files (every split of conf/data/demo.yaml; npm is on PATH here)
N_FILES = sum(
    len(v) for v in yaml.safe_load((CONF_DIR / "data" / "demo.yaml").read_text())["source"]["splits"].values()
)


def _env(cache: Path) -> dict:
    return {**os.environ, "LMGUIDE_CACHE_DIR": str(cache), "WANDB_MODE": "offline"}


def _cmd(run_dir: Path, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lmguide.prepare",
        *ARGS,
        f"data.prepare_workers={workers}",
        f"hydra.run.dir={run_dir}",
    ]


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
    work = _work(cache)
    if work is None:
        return {}
    return {
        str(p.relative_to(work)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(work.rglob("*"))
        if p.is_file() and not _is_temp(p)
    }


def _work(cache: Path) -> Path | None:
    """The crop folder of the demo index (one at most), None before the first file is written."""
    index = cache / "demo" / "index"
    works = list(index.iterdir()) if index.is_dir() else []
    assert len(works) <= 1, works
    return works[0] if works else None


def _temps(cache: Path) -> list[Path]:
    work = _work(cache)
    return sorted(p for p in work.rglob(".*") if p.is_file() and _is_temp(p)) if work else []


@pytest.fixture(scope="module")
def media_cache(media, cache_dir, tmp_path_factory) -> Path:
    """A cache holding only the demo media (copied from the session cache: nothing is fetched twice)."""
    import shutil

    cache = tmp_path_factory.mktemp("media_only")
    shutil.copytree(cache_dir / "demo" / "media", cache / "demo" / "media")
    shutil.copytree(cache_dir / "demo" / "downloads", cache / "demo" / "downloads", dirs_exist_ok=True)
    return cache


@pytest.fixture(scope="module")
def reference_run(media_cache, tmp_path_factory) -> tuple[dict[str, str], float]:
    """The uninterrupted run (1 worker): its files and its wall time in seconds."""
    import shutil

    cache = tmp_path_factory.mktemp("ref")
    shutil.copytree(media_cache, cache, dirs_exist_ok=True)
    t0 = time.monotonic()
    _prepare(cache, tmp_path_factory.mktemp("ref_run"))
    return _snapshot(cache), time.monotonic() - t0


@pytest.fixture(scope="module")
def reference(reference_run) -> dict[str, str]:
    """The uninterrupted run's files."""
    return reference_run[0]


def _fresh(media_cache: Path, tmp_path: Path) -> Path:
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(media_cache, cache)
    return cache


def _n_done(cache: Path) -> int:
    """Done records written whole; a record killed mid-write is a temp file the resume never reads."""
    return sum(1 for p in (cache / "demo" / "index").glob("*/done/**/*.json") if not _is_temp(p))


def _n_masks(cache: Path) -> int:
    return sum(1 for p in (cache / "demo" / "index").glob("*/masks/*/**/*.png") if not _is_temp(p))


def _kill_when(cache: Path, run_dir: Path, workers: int, stop) -> tuple[float, bool]:
    """Start prepare and SIGKILL it once ``stop(seconds since start)`` is true.

    Returns (seconds at the kill, whether it was killed: False if it exited first).
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(
        _cmd(run_dir, workers),
        env=_env(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the pool workers die with it (the whole process group is killed)
    )
    while proc.poll() is None and time.monotonic() - t0 < 300:
        if stop(time.monotonic() - t0):
            break
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    secs = time.monotonic() - t0
    proc.wait()
    return secs, killed


def _kill_after(cache: Path, run_dir: Path, n_done: int, workers: int) -> int:
    """Start prepare, SIGKILL it once ``n_done`` source files are recorded; returns how many were."""
    _, killed = _kill_when(cache, run_dir, workers, lambda _secs: _n_done(cache) >= n_done)
    assert killed, "prepare finished before it could be killed: raise the frame count"
    return _n_done(cache)


@pytest.mark.slow
@pytest.mark.parametrize(("n_done", "workers"), [(3, 1), (11, 2)])
def test_kill_9_then_resume_equals_an_uninterrupted_run(media_cache, reference, tmp_path, n_done, workers):
    cache = _fresh(media_cache, tmp_path)
    done = _kill_after(cache, tmp_path / "killed", n_done, workers)
    assert not list((cache / "demo" / "index").glob("*/manifests/*.csv"))  # killed before the end
    # what a kill in the middle of a write leaves: a temp file (never read), here in a source not done
    work = _work(cache)
    todo = next(k for k in reference if k.startswith("done/") and not (work / k).exists())[5:-5]
    stale = work / "faces" / todo / ".f00000_k00.png.kill0001.png"
    young = work / "landmarks" / todo / ".f00000_k00.npy.kill0002.npy"  # maybe a concurrent run's
    for temp, age in ((stale, 3600), (young, 0)):
        temp.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(b"\x89PNG\r\n half a file")
        os.utime(temp, (time.time() - age, time.time() - age))

    proc = _prepare(cache, tmp_path / "resumed", workers)
    resumed = re.search(r"(\d+) of (\d+) files already indexed", proc.stdout + proc.stderr)
    assert resumed and int(resumed[1]) >= done and int(resumed[2]) == N_FILES  # it resumed, not restarted
    # every crop, landmark file, mask, done record and the manifest, byte for byte
    assert _snapshot(cache) == reference
    assert not stale.exists() and young.exists()  # an old temp file is deleted, a young one left alone


#: a kill at a random time with 1 and with 2 workers, and one at a random mask count with 1 (kills at a
#: done count, for 1 and 2 workers, are test_kill_9_then_resume_equals_an_uninterrupted_run's)
N_TRIALS = 3
STAGES = ("faces", "landmarks", "done")  # the folders of a source, where resume deletes old temp files


def _phase(cache: Path, done: int) -> str:
    """Where a killed run stopped: before any file, in the landmark pass, in the mask pass, or after."""
    work = _work(cache)
    if work is not None and list(work.glob("masks/*/.complete-*")):
        return "finished"
    return "startup" if done == 0 else "landmarks" if done < N_FILES else "masks"


def _kill_and_resume(i: int, cache: Path, tmp: Path, reference: dict, workers: int, stop, when: str) -> dict:
    """One trial: kill prepare when ``stop`` says, check what it left, resume, compare to ``reference``."""
    secs, killed = _kill_when(cache, tmp / f"k{i}", workers, stop)
    done, left = _n_done(cache), _snapshot(cache)
    phase = _phase(cache, done) if killed else "exited"
    # nothing half-written is visible: every file a kill leaves is byte-identical to the reference's
    assert {k: v for k, v in left.items() if reference.get(k) != v} == {}, f"trial {i}"
    temps = _temps(cache)
    old = time.time() - 3600  # as if killed an hour ago: resume deletes temps older than 600 s it meets
    for t in temps:
        os.utime(t, (old, old))

    proc = _prepare(cache, tmp / f"r{i}", workers)
    resumed = re.search(rf"(\d+) of {N_FILES} files already indexed", proc.stdout + proc.stderr)
    if any(k.startswith("manifests/") for k in left):
        assert "landmark cache reused" in proc.stdout + proc.stderr and not resumed, f"trial {i}"
    else:  # resumed with exactly the files recorded before the kill, not restarted
        assert (int(resumed[1]) if resumed else 0) == done, f"trial {i}"
    after = _snapshot(cache)
    stale = [t for t in _temps(cache) if t.relative_to(_work(cache)).parts[0] in STAGES]
    return {
        "trial": i, "workers": workers, "when": when, "kill_s": secs, "killed": killed, "phase": phase,
        "done": done, "files": len(left), "temps": len(temps), "recovered": after == reference,
        "lost": sum(after.get(k) != v for k, v in reference.items()), "stale": len(stale),
    }  # fmt: skip


def _kill_table(trials: list[dict]) -> str:
    cols = ("trial", "workers", "when", "kill_s", "phase", "done", "files", "temps", "recovered", "lost")
    lines = [" ".join(f"{c:>9}" for c in cols)]
    for t in trials:
        cells = {**t, "kill_s": f"{t['kill_s']:.2f}", "recovered": "yes" if t["recovered"] else "NO"}
        lines.append(" ".join(f"{cells[c]!s:>9}" for c in cols))
    return "\n".join(lines)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(media_cache, reference_run, tmp_path):
    reference, ref_secs = reference_run
    rng = random.Random(1009)
    trials = []
    n_masks = sum(k.startswith("masks/") and k.endswith(".png") for k in reference)
    for i in range(N_TRIALS):
        cache = _fresh(media_cache, tmp_path / f"t{i}")
        if i < 2:  # a moment within the uninterrupted run's duration
            at = rng.uniform(0.05, 0.95) * ref_secs
            stop, when = (lambda t, at=at: t >= at), f"t>={at:.2f}s"
        else:  # in the mask pass, once a random number of masks is drawn
            n = rng.randint(1, n_masks - 1)
            stop, when = (lambda _t, c=cache, n=n: _n_masks(c) >= n), f"masks>={n}"
        workers = 1 + i % 2
        trials.append(_kill_and_resume(i, cache, tmp_path, reference, workers, stop, when))
    print(f"\nkill -9 at random moments; uninterrupted run: {ref_secs:.1f} s, {len(reference)} files")
    print(_kill_table(trials))
    assert [(t["recovered"], t["lost"], t["stale"]) for t in trials] == [(True, 0, 0)] * N_TRIALS
    assert sum(t["killed"] for t in trials) >= 2
    assert len({t["phase"] for t in trials if t["killed"]}) >= 2  # the kills landed at different stages


@pytest.mark.slow
def test_two_concurrent_prepares_share_the_cache(media_cache, reference, tmp_path):
    cache = _fresh(media_cache, tmp_path)
    procs = [
        subprocess.Popen(_cmd(tmp_path / f"run{i}", 1), env=_env(cache), stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    assert _snapshot(cache) == reference


@pytest.mark.slow
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


def test_disk_full_midway_is_one_clear_error_and_the_rerun_completes_the_cache(
    media_cache, reference, tmp_path, monkeypatch
):
    import errno

    from hydra import compose, initialize_config_dir

    import lmguide.data.cache as cache_mod
    from lmguide.data.cache import CacheWriteError
    from lmguide.prepare import prepare
    from lmguide.runs.runtime import CONF_DIR

    cache = _fresh(media_cache, tmp_path)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("prepare", overrides=[*ARGS, "data.prepare_workers=1", f"paths.cache_dir={cache}"])
    real, calls = cache_mod.atomic_write, []

    def disk_fills_up(path, write, suffix=""):
        calls.append(path)
        if len(calls) > 40:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write, suffix)

    monkeypatch.setattr(cache_mod, "atomic_write", disk_fills_up)
    with pytest.raises(CacheWriteError, match=f"under {cache}: No space left on device .* a re-run resumes"):
        prepare(cfg)
    monkeypatch.undo()
    written = _snapshot(cache)
    assert 0 < len(written) < len(reference)
    assert all(reference[k] == v for k, v in written.items())  # what was written is whole and right
    prepare(cfg)  # space freed: the same command completes the cache
    assert _snapshot(cache) == reference
