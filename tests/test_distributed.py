"""DDP refusals (lmguide/runs/distributed.py): an incomplete landmark cache stops a DDP run on every rank
before any process waits on another, with the sharded prepare command; a multirun with a DDP trainer under
Lightning's own launcher stops with the launchers that work."""

from __future__ import annotations

import pytest

from lmguide.runs.distributed import (
    DistributedError,
    ddp_processes,
    external_launcher,
    prepare_command,
    sweep_refusal,
)

from .conftest import FAST_DATA, run_cli

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
DDP += ["trainer.sync_batchnorm=false"]
#: a frame count no other test prepares: its cache is never complete (the crop key hashes it)
UNPREPARED = ["data.faces.frames_per_video=2", "data.num_workers=0"]
SLURM = {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "7"}


# --------------------------------------------------------------------------- units (fast)


def test_prepare_command_keeps_what_decides_the_cache():
    cmd = prepare_command(
        {"data": "ffpp", "landmarks": "contours", "backbone": "xception"},
        ["data=ffpp", "data.root=/d/FF++", "paths.cache_dir=/shared/c", "optim.lr=1e-3", "+data.x=a b"],
    )
    assert cmd == (
        "python -m lmguide.prepare data=ffpp landmarks=contours data.root=/d/FF++ "
        "paths.cache_dir=/shared/c '+data.x=a b'"
    )


def test_processes_lightning_would_start():
    assert ddp_processes("ddp", 8, 1) == 8
    assert ddp_processes("ddp", 4, 2) == 8
    assert ddp_processes("auto", [0, 1], 1) == 2 and ddp_processes("auto", "0,1,2", 1) == 3
    assert ddp_processes("auto", "auto", 1, gpus=4) == 4 and ddp_processes("auto", -1, 1, gpus=0) == 1
    assert ddp_processes("ddp_spawn", 8, 1) == 1  # spawns without re-running the command line
    assert ddp_processes("auto", 1, 1) == 1


def test_external_launchers():
    assert external_launcher({}) is None
    assert external_launcher({"TORCHELASTIC_RUN_ID": "x", "LOCAL_RANK": "0"}) == "torchrun"
    assert external_launcher(SLURM) == "slurm"
    assert external_launcher({**SLURM, "SLURM_JOB_NAME": "interactive"}) is None  # salloc: Lightning's own


def test_sweep_refusal_names_the_launchers_that_work():
    ddp = {"strategy": "ddp", "devices": 8, "num_nodes": 1}
    line = sweep_refusal(True, ddp, {})
    head = "a multirun (-m) with a DDP trainer (trainer.strategy=ddp, 8 processes) is refused: "
    assert line.startswith(head)
    assert "launcher=submitit_slurm" in line and "torchrun --nproc-per-node=8" in line and "\n" not in line
    assert sweep_refusal(False, ddp, {}) is None  # one run: Lightning's launcher is fine
    assert sweep_refusal(True, ddp, SLURM) is None  # submitit started one task per device
    assert sweep_refusal(True, ddp, {"TORCHELASTIC_RUN_ID": "1"}) is None
    assert sweep_refusal(True, {"strategy": "auto", "devices": 1}, {}) is None
    assert sweep_refusal(True, {"strategy": "auto", "devices": 2}, {}) is not None  # auto is DDP here


def test_datamodule_refuses_ddp_on_an_incomplete_cache_and_not_one_process(cache_dir, tmp_path):
    import hydra

    from .conftest import compose_cfg

    cfg = compose_cfg(UNPREPARED, tmp_path, cache_dir)
    dm = hydra.utils.instantiate(cfg.data)
    dm.check_cache_for(1)  # one process prepares in prepare_data as always
    with pytest.raises(DistributedError, match=r"not complete, and this run starts 4 DDP processes") as err:
        dm.check_cache_for(4, "python -m lmguide.prepare data=demo")
    assert "`python -m lmguide.prepare data=demo shard=<i>/<n>`" in str(err.value)
    assert "torchrun --nproc-per-node=<n> -m lmguide.prepare data=demo" in str(err.value)


def test_datamodule_accepts_ddp_on_a_complete_cache(demo_datamodule):
    demo_datamodule.check_cache_for(8)  # prepared by the fixture: nothing to index under DDP


# --------------------------------------------------------------------------- command line


def _work_dirs(cache_dir) -> set:
    return {p for p in cache_dir.glob("*/index/*") if p.is_dir()}


def test_ddp_on_an_incomplete_cache_stops_before_the_ranks_start(cache_dir, tmp_path):
    """Lightning's launcher (``trainer=ddp devices=2``): the parent stops before it starts rank 1, and
    nothing is indexed; the line gives the prepare command with the run's own data overrides."""
    before = _work_dirs(cache_dir)
    args = [*DDP, *UNPREPARED, "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_cli("lmguide.train", args, tmp_path, cache_dir, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the landmark cache ") and "this run starts 2 DDP processes" in line
    prepare = "python -m lmguide.prepare data=demo landmarks=eyes_nose_mouth data.faces.frames_per_video=2"
    assert prepare in line
    assert "shard=<i>/<n>" in line
    assert _work_dirs(cache_dir) == before  # no MediaPipe pass began
    assert "Initializing distributed" not in proc.stderr + proc.stdout  # no process group, no barrier


def test_each_torchrun_rank_stops_on_its_own(cache_dir, tmp_path):
    """Under torchrun every rank runs the command: both ranks of a 2-process job stop at once with the
    same line. A rank that went on would wait for its peer at the rendezvous and time out here."""
    from concurrent.futures import ThreadPoolExecutor

    def rank(r: int):
        env = {"TORCHELASTIC_RUN_ID": "t", "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2"}
        env |= {"LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
        env["MASTER_PORT"] = "29591"
        args = [*DDP, *UNPREPARED, "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'run'}"]
        return run_cli("lmguide.train", args, tmp_path, cache_dir, timeout=90, env=env)

    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(rank, (0, 1)))
    for proc in procs:
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "this run starts 2 DDP processes" in proc.stderr.strip().splitlines()[-1]


def test_a_sweep_with_ddp_is_refused_under_lightnings_launcher(cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1", *DDP, *FAST_DATA, "trainer.max_steps=1", f"hydra.sweep.dir={sweep}"]
    proc = run_cli("lmguide.train", args, tmp_path, cache_dir, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: a multirun (-m) with a DDP trainer (trainer.strategy=ddp, 2 processes)")
    assert "launcher=submitit_slurm" in line and "torchrun" in line
    assert not list(sweep.glob("*/checkpoints"))  # no job trained
