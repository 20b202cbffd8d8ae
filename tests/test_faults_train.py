"""Training faults: NaN/Inf steps are skipped and counted, never checkpointed; an output directory that
cannot hold the run is refused before training starts."""

from __future__ import annotations

import csv
import shutil
from collections import namedtuple

import hydra
import pytest
import torch

from lmguide.losses.composite import CompositeLoss
from lmguide.training.fit import checkpoint_bytes, train

from .conftest import FAST_DATA, compose_cfg

SHORT = [
    "attention.num_maps=2",
    "+trainer.limit_train_batches=2",
    "trainer.log_every_n_steps=1",
    "test=false",
]


def _poison(monkeypatch, bad_calls: set[int], term: str = "landmark") -> list[int]:
    """Make the ``term`` loss (and so the total) NaN on the given training-loss calls (0-based)."""
    calls: list[int] = []
    forward = CompositeLoss.forward

    def poisoned(self, *args, **kw):
        total, parts = forward(self, *args, **kw)
        n = len(calls)
        calls.append(n)
        if n in bad_calls:
            parts = {**parts, term: parts[term] * float("nan")}
            total = total + parts[term]
        return total, parts

    monkeypatch.setattr(CompositeLoss, "forward", poisoned)
    return calls


@pytest.mark.slow
def test_a_nan_step_is_skipped_counted_and_never_saved(cache_dir, tmp_path, monkeypatch, caplog):
    cfg = compose_cfg(FAST_DATA + SHORT + ["trainer.max_steps=4"], tmp_path, cache_dir)
    calls = _poison(monkeypatch, {1, 2})
    snapshots = []

    # the weights before and after every optimizer step
    orig = torch.optim.Adam.step

    def step(self, *a, **k):
        before = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        out = orig(self, *a, **k)
        after = [p.detach() for g in self.param_groups for p in g["params"]]
        snapshots.append(all(torch.equal(x, y) for x, y in zip(before, after, strict=True)))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    train(cfg)
    assert len(calls) == 4
    assert snapshots == [False, True, True, False]  # the two poisoned steps changed nothing
    assert "non-finite loss terms ['landmark'], update skipped (2 in a row, 2 in all)" in caplog.text
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    skipped = [float(r["train/skipped_steps"]) for r in rows if r.get("train/skipped_steps")]
    assert skipped == [0.0, 1.0, 2.0, 2.0]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["lmguide_skipped_steps"] == 2 and ckpt["global_step"] == 4
    assert all(v.isfinite().all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert ckpt["state_dict"]["center.centers"].isfinite().all()


@pytest.mark.slow
def test_consecutive_bad_steps_stop_training_with_the_reason(cache_dir, tmp_path, monkeypatch):
    cfg = compose_cfg(
        FAST_DATA + SHORT + ["trainer.max_steps=20", "model.max_bad_steps=3"], tmp_path, cache_dir
    )
    calls = _poison(monkeypatch, set(range(1, 100)))
    with pytest.raises(
        FloatingPointError, match=r"3 training steps in a row had non-finite loss terms \['landmark'\]"
    ):
        train(cfg)
    assert len(calls) == 4  # one good step, then three bad ones, then the stop
    for name in ("best.ckpt", "last.ckpt"):
        path = tmp_path / "checkpoints" / name
        if path.exists():  # whatever was written holds finite weights only
            sd = torch.load(path, weights_only=True)["state_dict"]
            assert all(v.isfinite().all() for v in sd.values() if v.is_floating_point())


@pytest.mark.slow
def test_gradscaler_overflow_steps_are_the_scalers_not_bad_steps(cache_dir, tmp_path, monkeypatch, caplog):
    """16-mixed with a real GradScaler whose first scale (2^20, beyond fp16's 65504) overflows the
    gradients: the scaler skips those steps and halves its scale; the guard counts none of them, even
    past max_bad_steps in a row, and training goes on once the scale fits."""
    from omegaconf import open_dict

    cfg = compose_cfg(
        FAST_DATA
        + SHORT
        + [
            "trainer.max_steps=9",
            "model.max_bad_steps=2",
            "data.image_size=64",
            "+trainer.limit_val_batches=1",
        ],
        tmp_path,
        cache_dir,
    )
    scaler = {"_target_": "torch.amp.GradScaler", "device": "cpu", "init_scale": 2.0**20}
    plugin = {
        "_target_": "lightning.pytorch.plugins.precision.MixedPrecision",
        "precision": "16-mixed",
        "device": "cpu",
        "scaler": scaler,
    }
    with open_dict(cfg):
        cfg.trainer.plugins = [plugin]
    overflowed: list[bool] = []  # per optimizer step: did the scaler lower its scale (an overflow)?
    update = torch.amp.GradScaler.update

    def record(self, *a, **k):
        before = self.get_scale()
        out = update(self, *a, **k)
        overflowed.append(self.get_scale() < before)
        return out

    monkeypatch.setattr(torch.amp.GradScaler, "update", record)
    stepped = []  # the optimizer steps the scaler let through
    orig = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam, "step", lambda self, *a, **k: stepped.append(1) or orig(self, *a, **k)
    )
    with caplog.at_level("INFO", logger="lmguide.models.guard"):
        train(cfg)
    assert overflowed[:3] == [True, True, True], overflowed  # more in a row than max_bad_steps=2 allows
    assert len(stepped) == overflowed.count(False) > 0, overflowed  # the scaler's steps, then real ones
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["lmguide_skipped_steps"] == 0
    assert "the GradScaler skips the step (not a bad step" in caplog.text
    assert "update skipped" not in caplog.text


def test_inf_gradients_with_a_finite_loss_are_skipped_too(tmp_path):
    cfg = compose_cfg(["attention.num_maps=2"], tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    params[0].grad[(0,) * params[0].grad.dim()] = float("inf")
    model.on_before_optimizer_step(None)
    assert all(p.grad is None for p in params) and model.skipped_steps == 1 and model.guard.in_row == 1
    for p in params:
        p.grad = torch.ones_like(p)
    model.on_before_optimizer_step(None)
    assert all(p.grad is not None for p in params) and model.skipped_steps == 1 and model.guard.in_row == 0


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    cfg = compose_cfg(["attention.num_maps=2"], tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    sd = model.state_dict()
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = sd[key].clone().fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=f"refusing to write a checkpoint .*{key}"):
        model.on_save_checkpoint({"state_dict": sd})


def test_max_bad_steps_must_be_positive(tmp_path):
    cfg = compose_cfg(["model.max_bad_steps=0"], tmp_path)
    with pytest.raises(Exception, match="model.max_bad_steps must be >= 1"):
        hydra.utils.instantiate(cfg.model)


# --------------------------------------------------------------------------- output directory


def test_unwritable_output_dir_is_refused_before_training(cache_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "run"  # cannot be created (root can write anywhere, so no chmod test)
    cfg = compose_cfg(FAST_DATA + SHORT + ["trainer.max_steps=2"], out, cache_dir)
    with pytest.raises(RuntimeError, match=f"output directory {out} is not writable"):
        train(cfg)
    assert blocker.read_text() == "not a folder"


def test_full_disk_is_refused_before_training(cache_dir, tmp_path, monkeypatch):
    cfg = compose_cfg(FAST_DATA + SHORT + ["trainer.max_steps=2"], tmp_path / "run", cache_dir)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(2**30, 2**30 - 10 * 2**20, 10 * 2**20))
    with pytest.raises(
        RuntimeError, match=r"only 10 MiB free on the disk of .*run; this run needs about \d+ MiB"
    ):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == []  # the write probe left nothing behind


def test_checkpoint_estimate_covers_the_real_checkpoints(trained_ckpt, tmp_path):
    cfg = compose_cfg(["attention.num_maps=2"], tmp_path)
    need = checkpoint_bytes(hydra.utils.instantiate(cfg.model)) - 64 * 2**20  # without the log margin
    size = trained_ckpt.stat().st_size  # the same model, weights + Adam state + extras
    assert 2 * size <= need <= 4 * size  # best + last (+ one being written), not a wild guess
