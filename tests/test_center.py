"""Center loss: the moving average of the class centers, its place in checkpoints, and its DDP sync."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import hydra
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmguide.losses.center import CenterLoss
from lmguide.runs.runtime import ROOT_DIR

from .conftest import FAST_DATA, compose_cfg, run_cli


def _ema(center: list[float], batch_mean: list[float], beta: float) -> list[float]:
    return [c + beta * (m - c) for c, m in zip(center, batch_mean, strict=True)]


def test_two_updates_follow_the_moving_average_and_skip_absent_classes():
    loss = CenterLoss(num_features=2, num_classes=3, beta=0.25).train()
    # batch 1: class 0 twice (mean (2, 4)), class 1 once (6, -2), class 2 absent
    feats1 = torch.tensor([[1.0, 3.0], [3.0, 5.0], [6.0, -2.0]])
    loss(feats1, torch.tensor([0, 0, 1]))
    c0, c1, c2 = _ema([0, 0], [2, 4], 0.25), _ema([0, 0], [6, -2], 0.25), [0.0, 0.0]
    torch.testing.assert_close(loss.centers, torch.tensor([c0, c1, c2]))
    # batch 2: class 1 is missing, class 2 appears
    feats2 = torch.tensor([[4.0, 0.0], [-1.0, 1.0], [-3.0, 5.0]])
    loss(feats2, torch.tensor([0, 2, 2]))
    c0, c2 = _ema(c0, [4, 0], 0.25), _ema(c2, [-2, 3], 0.25)
    torch.testing.assert_close(loss.centers, torch.tensor([c0, c1, c2]))  # class 1 unchanged


def test_loss_is_the_mean_squared_distance_and_eval_does_not_update():
    loss = CenterLoss(num_features=2, num_classes=2, beta=0.5)
    loss.centers.copy_(torch.tensor([[1.0, 1.0], [0.0, -1.0]]))
    loss.eval()
    value = loss(torch.tensor([[1.0, 3.0], [3.0, -1.0]]), torch.tensor([0, 1]))
    assert value.item() == pytest.approx((4.0 + 9.0) / 2)
    assert loss.centers.tolist() == [[1.0, 1.0], [0.0, -1.0]]


@pytest.mark.parametrize("beta", [0.0, 1.5])
def test_beta_outside_the_unit_interval_is_refused(beta):
    with pytest.raises(ValueError, match="center_beta"):
        CenterLoss(4, beta=beta)


def test_centers_are_in_the_model_state_dict_and_survive_a_checkpoint_round_trip(tmp_path):
    cfg = compose_cfg(["model.center_beta=0.2", "attention.num_maps=2"], tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    assert model.center.beta == 0.2  # model.center_beta reaches the loss
    assert "center.centers" in model.state_dict()
    assert "center.centers" not in dict(model.named_parameters())  # a buffer: no gradient, no optimiser
    model.center.train()
    feats = torch.randn(6, model.center.centers.shape[1])
    model.center(feats, torch.tensor([0, 1, 0, 1, 1, 0]))
    saved = model.center.centers.clone()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "m.ckpt")

    fresh = hydra.utils.instantiate(cfg.model)
    assert fresh.center.centers.abs().sum() == 0
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=True, map_location="cpu")
    fresh.load_state_dict(ckpt["state_dict"])
    assert torch.equal(fresh.center.centers, saved)


# -- DDP: two CPU processes (gloo), different data per rank -------------------------------------------

BETA = 0.5
INIT = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -1.0]]  # 3 classes, 3 features
# (step, rank) -> (features, labels); class 2 is absent everywhere, class 0 only on rank 0 at step 0
BATCHES = {
    (0, 0): ([[2.0, 2.0, 0.0], [4.0, 0.0, 2.0], [0.0, 6.0, 0.0]], [0, 0, 1]),
    (0, 1): ([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0], [-4.0, 0.0, 8.0]], [1, 1, 1]),
    (1, 0): ([[6.0, 0.0, 0.0]], [1]),
    (1, 1): ([[0.0, 4.0, 0.0], [2.0, 2.0, 2.0]], [0, 1]),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    from datetime import timedelta

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=30),
    )
    try:
        loss = CenterLoss(num_features=3, num_classes=3, beta=BETA).train()
        loss.centers.copy_(torch.tensor(INIT))
        for step in range(2):
            feats, labels = BATCHES[(step, rank)]
            loss(torch.tensor(feats), torch.tensor(labels))
            torch.save(loss.centers.clone(), Path(out_dir) / f"step{step}_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _global_ema() -> list[list[list[float]]]:
    """The centers after each step: EMA towards the class means over both ranks' samples together."""
    centers, out = [list(c) for c in INIT], []
    for step in range(2):
        feats = BATCHES[(step, 0)][0] + BATCHES[(step, 1)][0]
        labels = BATCHES[(step, 0)][1] + BATCHES[(step, 1)][1]
        for k in range(3):
            rows = [f for f, y in zip(feats, labels, strict=True) if y == k]
            if rows:
                mean = [sum(col) / len(rows) for col in zip(*rows, strict=True)]
                centers[k] = _ema(centers[k], mean, BETA)
        out.append([list(c) for c in centers])
    return out


def test_ddp_ranks_share_the_same_centers_from_the_global_class_means(tmp_path):
    t0 = time.perf_counter()
    ctx = mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 60
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            pytest.fail("the two gloo processes did not finish within 60 s")
    expected = _global_ema()
    for step in range(2):
        r0 = torch.load(tmp_path / f"step{step}_rank0.pt", weights_only=True)
        r1 = torch.load(tmp_path / f"step{step}_rank1.pt", weights_only=True)
        assert torch.equal(r0, r1), f"ranks differ after step {step}"
        torch.testing.assert_close(r0, torch.tensor(expected[step]))
    # a per-rank update would have moved class 1 of rank 1 towards (0, 4/3, 4) alone: not what happened
    assert expected[0][1] != pytest.approx(_ema(INIT[1], [0.0, 4 / 3, 4.0], BETA))
    print(f"DDP center-loss test: {time.perf_counter() - t0:.1f} s")


def dump_centers(dirpath: str):
    """A callback saving every rank's centers after every training step (for the Lightning DDP test
    below); built here so that the gloo workers above, which import this module, skip Lightning."""
    import lightning as L

    class DumpCenters(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            Path(dirpath).mkdir(parents=True, exist_ok=True)
            name = f"step{trainer.global_step}_rank{trainer.global_rank}.pt"
            torch.save(pl_module.center.centers.detach().cpu().clone(), Path(dirpath) / name)

    return DumpCenters()


@pytest.mark.slow
def test_lightning_ddp_on_two_cpu_processes_keeps_the_centers_identical(cache_dir, tmp_path, monkeypatch):
    """`python -m lmguide.train +trainer.strategy=ddp trainer.devices=2 trainer.accelerator=cpu`, 2 steps.

    DDP broadcasts rank 0's buffers before each forward, so without the all-reduce the ranks' centers
    would differ right after each update (each moved by its own shard of the batch)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT_DIR))  # the rank-1 process imports dump_centers too
    dumps = tmp_path / "centers"
    args = [
        "+trainer.strategy=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.max_steps=2",
        "+trainer.limit_train_batches=1",
        "attention.num_maps=2",
        "test=false",
        "+callbacks.dump_centers._target_=tests.test_center.dump_centers",
        f"+callbacks.dump_centers.dirpath={dumps}",
        *FAST_DATA,
        f"hydra.run.dir={tmp_path}",
    ]
    proc = run_cli("lmguide.train", args, tmp_path, cache_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for step in (1, 2):
        r0 = torch.load(dumps / f"step{step}_rank0.pt", weights_only=True)
        r1 = torch.load(dumps / f"step{step}_rank1.pt", weights_only=True)
        assert r0.abs().sum() > 0
        assert torch.equal(r0, r1), f"ranks differ after step {step}: {(r0 - r1).abs().max():.3g}"
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    # last.ckpt is written at the end of every epoch: it holds the last step's (rank-identical) centers
    assert int(ckpt["global_step"]) == 2
    saved = torch.load(dumps / "step2_rank0.pt", weights_only=True)
    torch.testing.assert_close(ckpt["state_dict"]["center.centers"], saved)
