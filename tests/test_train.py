"""End to end on real demo faces: fast_dev_run of the default config, a short real run, the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from lmguide import ROOT_DIR
from lmguide.train import train

from .conftest import FAST_DATA, compose_cfg, run_cli


def test_fast_dev_run_default_config(cache_dir, tmp_path):
    cfg = compose_cfg(FAST_DATA + ["trainer.fast_dev_run=true"], tmp_path, cache_dir)
    metrics = train(cfg)
    for k in ("test/auc", "test/acc", "test/eer", "test/attn_in_lm", "test/video_auc"):
        assert k in metrics and 0.0 <= metrics[k] <= 1.0
    assert json.loads((tmp_path / "metrics.json").read_text())["test/auc"] == metrics["test/auc"]
    assert list((tmp_path / "overlays").glob("val_step*.png"))


def test_short_run_writes_checkpoints_logs_and_every_loss_part(cache_dir, tmp_path):
    overrides = ["trainer.max_steps=4", "+trainer.limit_train_batches=2", "trainer.log_every_n_steps=1"]
    cfg = compose_cfg(FAST_DATA + overrides, tmp_path, cache_dir)
    train(cfg)
    assert (tmp_path / "checkpoints" / "best.ckpt").exists() and (
        tmp_path / "checkpoints" / "last.ckpt"
    ).exists()
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    cols = set(rows[0])
    assert "train/empty_masks" in cols
    for part in ("ce_raw", "ce_aux", "ce_aug", "center", "landmark", "total"):
        assert f"train/loss/{part}" in cols
    for k in (
        "val/auc",
        "val/ap",
        "val/eer",
        "val/f1",
        "val/precision",
        "val/acc",
        "val/video_auc",
        "val/attn_in_lm",
    ):
        assert k in cols
    ckpt = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["lmguide_config"]["loss"]["lambda_lm"] == 1.0
    assert "center.centers" in ckpt["state_dict"] and ckpt["state_dict"]["center.centers"].abs().sum() > 0
    assert list((tmp_path / "tensorboard").glob("events.*"))


def test_wandb_logger_is_offline_without_a_key(cache_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose_cfg(FAST_DATA + ["trainer.fast_dev_run=true", "logger=wandb"], tmp_path, cache_dir)
    train(cfg)
    assert os.environ["WANDB_MODE"] == "offline"
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_wandb_run_gets_curves_overlays_and_the_checkpoint(cache_dir, tmp_path, monkeypatch):
    """logger=many offline: scalars, attention overlays, test curves and the best checkpoint as an
    artifact reach the W&B run; the API key is never written anywhere."""
    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("WANDB_MODE", "offline")  # a key is set, but this machine has no network
    overrides = [
        "logger=many",
        "logger.wandb.log_model=true",
        "trainer.max_steps=2",
        "+trainer.limit_train_batches=1",
    ]
    cfg = compose_cfg(FAST_DATA + overrides, tmp_path, cache_dir)
    train(cfg)
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = {p.parent.name + "/" + p.name.split("_")[0] for p in (run / "files" / "media").rglob("*.png")}
    assert {"test/curves", "val/attention"} <= media
    assert {p.name for p in (tmp_path / "curves").iterdir()} == {"roc.png", "pr.png", "confusion.png"}
    assert b"best.ckpt" in next(run.glob("*.wandb")).read_bytes()  # the checkpoint artifact
    assert list((tmp_path / "tensorboard").glob("events.*")) and (tmp_path / "csv" / "metrics.csv").exists()
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked, leaked


def _cli(args: list[str], tmp_path: Path, cache_dir: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_cli("lmguide.train", [*args, f"hydra.run.dir={tmp_path}"], tmp_path, cache_dir, timeout)


def test_cli_vit_with_lambda_override(cache_dir, tmp_path):
    """`python -m lmguide.train backbone=vit loss.lambda_lm=0.3`, as a fast_dev_run, from another cwd."""
    proc = _cli(
        ["backbone=vit", "loss.lambda_lm=0.3", "trainer.fast_dev_run=true", *FAST_DATA], tmp_path, cache_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lmguide: run summary" in proc.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "test/auc" in metrics
    cfg = (tmp_path / ".hydra" / "config.yaml").read_text()
    assert "vit_tiny_patch16_224" in cfg and "lambda_lm: 0.3" in cfg
    assert not (tmp_path / "outputs").exists() and (ROOT_DIR / "conf").is_dir()


@pytest.mark.slow
def test_cli_exact_vit_command_trains(cache_dir, tmp_path):
    """The README's exact command, bounded to a few steps (the only addition besides the run dir)."""
    proc = _cli(
        ["backbone=vit", "loss.lambda_lm=0.3", "trainer.max_steps=20"], tmp_path, cache_dir, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["test/auc"] <= 1.0 and (tmp_path / "checkpoints" / "best.ckpt").exists()
    ckpt = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["lmguide_overrides"]["choices"]["backbone"] == "vit"
    assert "loss.lambda_lm=0.3" in ckpt["lmguide_overrides"]["overrides"]
    assert ckpt["lmguide_config"]["model"]["backbone"]["name"] == "vit_tiny_patch16_224"


def test_cli_multirun_lambda_grid(cache_dir, tmp_path):
    """`-m loss.lambda_lm=0,1`: one job per value, each with its own directory and metrics."""
    args = [
        "-m",
        "loss.lambda_lm=0,1",
        "trainer.fast_dev_run=true",
        *FAST_DATA,
        f"hydra.sweep.dir={tmp_path}",
    ]
    proc = run_cli("lmguide.train", args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    lambdas = [(p / ".hydra" / "overrides.yaml").read_text() for p in jobs]
    assert "loss.lambda_lm=0" in lambdas[0] and "loss.lambda_lm=1" in lambdas[1]
    aucs = []
    for p in jobs:
        aucs.append(json.loads((p / "metrics.json").read_text())["val/auc"])
    # the sweep callback wrote the report: one row per λ, the value of its (only) seed
    table = (tmp_path / "sweep_report.md").read_text()
    assert (
        f"| loss.lambda_lm=0 | 0 | {aucs[0]:.3f} |" in table
        and f"| loss.lambda_lm=1 | 0 | {aucs[1]:.3f} |" in table
    )
    assert (tmp_path / "sweep_report.csv").exists() and (tmp_path / "sweep_report.png").exists()
