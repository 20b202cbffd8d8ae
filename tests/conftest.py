"""Shared fixtures: a session-wide demo cache (real faces fetched from the registries) and config
composition with the real conf/ tree."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lmguide.runs.runtime import CONF_DIR

# few frames per video keeps the MediaPipe pass of the test cache at a few seconds
FAST_DATA = [
    "data.faces.frames_per_video=3",
    "data.num_workers=0",
    "data.batch_size=4",
    "data.eval_batch_size=8",
]
#: the data of the runs the kill -9 resume tests interrupt: 2 loader workers, a log line every step
KILL_DATA = [
    "data.faces.frames_per_video=3",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "data.num_workers=2",
    "trainer.log_every_n_steps=1",
]


def pytest_collection_modifyitems(config, items):
    """The slow tests first, in their files' order. Under ``--dist loadfile --no-loadscope-reorder`` (the
    Makefile's) a file goes to a worker where its first test stands, so the files with slow tests go
    first: when both tiers run in one session (``.ci/run``, ``make test-full``) the 20-55 s process tests
    start while both workers are busy and the many short files fill the end, instead of one worker
    finishing a long test alone. The order is the same on every worker, as xdist requires."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_configure(config):
    """Under pytest-xdist (``-n 2``) each worker computes on one core: two workers each asking torch for
    both cores would fight over them. The fork server and its children inherit the setting."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def _shared_root(tmp_path_factory) -> Path:
    """Where set-up shared by the whole run lives: ``$LMGUIDE_TEST_SHARED`` when set (a folder that
    outlives the run: set it to reuse the demo cache and the trained checkpoint in a later session, e.g.
    ``make test`` then ``make test-slow``), else the run's base temp dir, or under pytest-xdist the folder
    above the workers' own, so that the workers build it once between them."""
    if shared := os.environ.get("LMGUIDE_TEST_SHARED"):
        Path(shared).mkdir(parents=True, exist_ok=True)
        return Path(shared)
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def _built_once(tmp_path_factory, name: str):
    """``with _built_once(f, name) as path:`` the shared folder ``name``; the body (which builds it
    when its ``.done`` marker is missing) runs under a lock, so one worker builds it and the others wait."""
    from filelock import FileLock

    root = _shared_root(tmp_path_factory)
    with FileLock(str(root / f"{name}.lock")):
        path = root / name
        path.mkdir(exist_ok=True)
        yield path
        (path / ".done").touch()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One demo cache for the whole run, all xdist workers together (media fetched once)."""
    from lmguide.data.demo import fetch_demo_media

    with _built_once(tmp_path_factory, "lmguide_cache") as path:
        if not (path / ".done").exists():
            fetch_demo_media(path)
    return path


@pytest.fixture(scope="session")
def media(cache_dir) -> dict[str, Path]:
    """The demo's media files by name (fetched into the session cache by ``cache_dir``)."""
    from lmguide.data.demo import fetch_demo_media

    return fetch_demo_media(cache_dir)


def cli_env(cache_dir: Path, changes: dict[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a test's command line: the test cache, W&B offline, then ``changes`` (a None
    value removes the variable)."""
    env = {**os.environ, "LMGUIDE_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline"}
    for key, value in (changes or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class ForkClient:
    """Client of ``tests/forkserver.py``: one pre-imported server for the session, one forked child per
    command line (thread-safe; children run concurrently)."""

    def __init__(self):
        import subprocess
        import sys
        import threading

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.forkserver"],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if json.loads(self.proc.stdout.readline() or "{}").get("ready") is not True:
            raise RuntimeError(f"tests/forkserver.py did not start (exit code {self.proc.poll()})")
        self.lock, self.done = threading.Lock(), threading.Condition()
        self.replies: dict[int, dict] = {}
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self.done:
                self.replies[msg["id"]] = msg
                self.done.notify_all()
        with self.done:  # the server is gone: wake every waiter
            self.replies[-1] = {}
            self.done.notify_all()

    def run(self, module: str, args: list[str], cwd: Path, env: dict, timeout: float):
        import subprocess
        import sys

        with self.lock:
            rid, self.next_id = self.next_id, self.next_id + 1
            req = {"id": rid, "module": module, "args": [str(a) for a in args], "cwd": str(cwd)}
            self.proc.stdin.write(json.dumps({**req, "env": env, "timeout": timeout}) + "\n")
            self.proc.stdin.flush()
        with self.done:
            self.done.wait_for(lambda: rid in self.replies or -1 in self.replies)
            msg = self.replies.pop(rid, None)
        cmd = [sys.executable, "-m", module, *map(str, args)]
        if msg is None:
            raise RuntimeError("tests/forkserver.py died")
        if msg["timeout"]:
            raise subprocess.TimeoutExpired(cmd, timeout, msg["stdout"], msg["stderr"])
        return subprocess.CompletedProcess(cmd, msg["returncode"], msg["stdout"], msg["stderr"])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


_FORK: ForkClient | None = None


def run_cli(
    module: str,
    args: list[str],
    cwd: Path,
    cache_dir: Path,
    timeout: int = 600,
    real: bool = False,
    env: dict[str, str | None] | None = None,
):
    """``python -m <module> <args>`` in ``cwd`` with the test cache and W&B offline.

    It runs in a child forked from ``tests/forkserver.py`` (the stack imported once per session: a
    process of its own, without the import); ``real`` (or ``LMGUIDE_TEST_SUBPROCESS=1``) runs a fresh
    interpreter instead. ``env``: changes to the environment (None removes a variable)."""
    import subprocess
    import sys

    global _FORK
    env = cli_env(cache_dir, env)
    if real or os.environ.get("LMGUIDE_TEST_SUBPROCESS"):
        cmd = [sys.executable, "-m", module, *args]
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if _FORK is None:
        _FORK = ForkClient()
    return _FORK.run(module, args, cwd, env, timeout)


@pytest.fixture(scope="session", autouse=True)
def _close_forkserver():
    yield
    if _FORK is not None:
        _FORK.close()


def compose_entry(config_name: str, *overrides: str):
    """An entry point's primary config (``conf/<config_name>.yaml``) with ``overrides``, composed."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def missing_checkpoint_line(module: str, tmp_path: Path, cache_dir: Path) -> tuple[int, str, str]:
    """``python -m <module> ckpt_path=<a missing file>``: (exit code, last stderr line, the path given)."""
    missing = tmp_path / "nope.ckpt"
    proc = run_cli(module, [f"ckpt_path={missing}", f"hydra.run.dir={tmp_path}"], tmp_path, cache_dir)
    return proc.returncode, proc.stderr.strip().splitlines()[-1], str(missing)


def compose_cfg(overrides: list[str], output_dir: Path, cache_dir: Path | None = None):
    ov = (
        [f"paths.output_dir={output_dir}"]
        + ([f"paths.cache_dir={cache_dir}"] if cache_dir else [])
        + overrides
    )
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=ov)


@pytest.fixture(scope="session")
def demo_datamodule(cache_dir, tmp_path_factory):
    """The default demo datamodule (few frames per video), prepared and set up."""
    import hydra

    cfg = compose_cfg(FAST_DATA, tmp_path_factory.mktemp("out"), cache_dir)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "offline"))


@pytest.fixture(scope="session")
def trained_ckpt(cache_dir, tmp_path_factory) -> Path:
    """A real (tiny) training run through the CLI: 2 steps, 2 validations, best.ckpt written."""
    with _built_once(tmp_path_factory, "trained") as run:
        if not (run / ".done").exists():
            ov = ("attention.num_maps=2", "trainer.max_steps=2", "+trainer.limit_train_batches=1")
            fast_train(cache_dir, run, *ov)
    return run / "checkpoints" / "best.ckpt"


def fast_train(cache_dir: Path, run_dir: Path, *overrides: str, sweep: bool = False):
    """``python -m lmguide.train`` on the FAST_DATA demo into ``run_dir`` (a multirun's sweep dir with
    ``sweep``); asserts it succeeded and returns the finished process."""
    where = f"hydra.sweep.dir={run_dir}" if sweep else f"hydra.run.dir={run_dir}"
    args = (["-m"] if sweep else []) + [*FAST_DATA, *overrides, where]  # overrides win over FAST_DATA
    proc = run_cli("lmguide.train", args, run_dir, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def kill_during_training(
    args: list[str], run: Path, cwd: Path, cache_dir: Path, min_step: int, delay: float
) -> int:
    """Start ``python -m lmguide.train <args> hydra.run.dir=<run>``; once its last.ckpt holds step
    ``min_step`` wait ``delay`` s, then SIGKILL the whole process group (loader workers too). Returns the
    step last.ckpt held after the kill."""
    import signal
    import subprocess
    import sys
    import time

    import torch

    cmd = [sys.executable, "-m", "lmguide.train", *args, f"hydra.run.dir={run}"]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=cli_env(cache_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    last = run / "checkpoints" / "last.ckpt"

    def step() -> int:  # written atomically: a file that exists is whole
        return int(torch.load(last, weights_only=True)["global_step"]) if last.exists() else -1

    deadline = time.monotonic() + 600
    while step() < min_step and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return step()


# --------------------------------------------------------------------------- fake data set trees


@pytest.fixture(scope="module")
def media_bytes(tmp_path_factory) -> dict[str, bytes]:
    """A tiny 3-frame mp4 and a tiny png, encoded once; the layout tests' fake trees copy the bytes."""
    import cv2
    import numpy as np

    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (16, 16))
    for i in range(3):
        writer.write(np.full((16, 16, 3), 40 * i, np.uint8))
    writer.release()
    ok, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    assert ok and path.stat().st_size > 0
    return {"video": path.read_bytes(), "image": png.tobytes()}


@pytest.fixture
def touch(media_bytes):
    """``touch(root, "a/b.mp4", "c/d.png", ...)`` writes media files (video or image by suffix)."""

    def write(root: Path, *rels: str) -> None:
        for rel in rels:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(media_bytes["image" if path.suffix == ".png" else "video"])

    return write


def table(items) -> dict[str, tuple[int, str, str | None]]:
    """Indexed items as ``{key: (label, split, video_id)}``, the layout tests' expected tables."""
    return {it.key: (it.label, it.split, it.video_id) for it in items}
