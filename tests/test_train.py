"""End to end on real demo faces: fast_dev_run of the default config, a short real run, the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from lmguide.runs.runtime import ROOT_DIR
from lmguide.training.fit import train

from .conftest import FAST_DATA, compose_cfg, fast_train, run_cli


def _tensorboard_tensor_tags(root: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in root.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
        acc.Reload()
        tags |= set(acc.Tags()["tensors"])
    return tags


def test_pr_curve_reaches_tensorboard_with_the_counts_of_the_scores(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    from lmguide.runs.loggers import log_pr_curve

    labels = torch.tensor([0, 0, 0, 1, 1, 0, 1])
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.7, 0.9, 0.2])
    lg = TensorBoardLogger(tmp_path, name="", version="")
    assert log_pr_curve([lg], "val/pr_curve", labels, scores, step=7) == 1
    assert log_pr_curve([lg], "x/pr_curve", torch.zeros(3), torch.rand(3), step=7) == 0  # one class
    lg.experiment.flush()
    (events,) = tmp_path.rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
    acc.Reload()
    (event,) = acc.Tensors("val/pr_curve")
    data = tensor_util.make_ndarray(event.tensor_proto)
    tp, fp = data[0], data[1]  # rows: TP, FP, TN, FN, precision, recall; column 0 = threshold 0
    assert event.step == 7 and tp[0] == 3 and fp[0] == 4


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
    # PR curves of val (each validation) and test in TensorBoard
    tags = _tensorboard_tensor_tags(tmp_path / "tensorboard")
    assert {"val/pr_curve", "test/pr_curve"} <= tags
    # per-epoch train-side detection metrics beside val's (2 epochs of 2 steps: 2 rows each)
    for name in ("auc", "precision", "recall", "f1"):
        values = [float(r[f"train/{name}"]) for r in rows if r.get(f"train/{name}")]
        assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values), name
    for part in ("ce_raw", "ce_crop", "ce_drop", "center", "landmark", "total"):
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


def test_predictions_csv_holds_every_scored_face_and_gives_metrics_json_auc(trained_ckpt):
    """The run's predictions.csv: one row per face of val, test and swaps, keyed by the frame's path in
    the data set, whose AUC per split is the one metrics.json reports."""
    from sklearn.metrics import roc_auc_score

    from lmguide.evaluation.predictions import read_predictions

    run = trained_ckpt.parent.parent
    metrics = json.loads((run / "metrics.json").read_text())
    preds = read_predictions(run / "predictions.csv")
    assert set(preds) == {"val", "test", "swaps"}
    for split, cols in preds.items():
        assert len(set(cols["key"])) == len(cols["key"])  # one row per face, none twice
        auc = roc_auc_score(cols["label"], cols["p_fake"])
        assert auc == pytest.approx(metrics[f"{split}/auc"], abs=1e-5), split
        assert len(set(cols["person"])) == metrics[f"{split}/people"]
    fakes = [k for k, y in zip(preds["swaps"]["key"], preds["swaps"]["label"], strict=True) if y]
    assert fakes and all(k.startswith("swap:") for k in fakes)
    reals = {k for k, y in zip(preds["test"]["key"], preds["test"]["label"], strict=True) if not y}
    assert reals == {k for k, y in zip(preds["swaps"]["key"], preds["swaps"]["label"], strict=True) if not y}


def test_metrics_json_has_the_attention_per_region_and_the_map_diversity_of_every_scored_set(trained_ckpt):
    metrics = json.loads((trained_ckpt.parent.parent / "metrics.json").read_text())
    for split in ("val", "test", "swaps"):
        shares = [metrics[f"{split}/attn_{r}"] for r in ("eyes", "nose", "mouth")]
        assert all(0 < s < 1 for s in shares), (split, shares)
        # the regions barely overlap: their shares add up to about the share inside the whole mask
        assert sum(shares) == pytest.approx(metrics[f"{split}/attn_in_lm"], abs=0.05), split
        assert -1 <= metrics[f"{split}/map_corr"] <= 1  # the fixture's run has two maps


def test_swaps_and_the_other_post_test_metrics_reach_tensorboard(trained_ckpt):
    """What the run computes after Lightning's test (the swap set, calibrated accuracy, intervals, the
    attention per region) used to reach metrics.json only: TensorBoard now has every number of it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = trained_ckpt.parent.parent
    saved = json.loads((run / "metrics.json").read_text())
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()  # every event file of the folder
    tags = set(acc.Tags()["scalars"])
    swaps = {k for k, v in saved.items() if k.startswith("swaps/") and isinstance(v, int | float)}
    assert {"swaps/auc", "swaps/eer", "swaps/attn_in_lm"} <= swaps <= tags, sorted(swaps - tags)
    (last,) = acc.Scalars("swaps/auc")
    assert (
        last.value == pytest.approx(saved["swaps/auc"])
        and last.step == torch.load(trained_ckpt, weights_only=True)["global_step"]
    )
    assert {"val/cal_acc", "test/auc_ci95_lo", "threshold_val"} <= tags
    assert len(acc.Scalars("test/auc")) == 1  # what the module logged is not sent twice


def test_log_scalars_sends_numbers_to_tensorboard_and_wandb_only():
    from lmguide.runs.loggers import log_scalars

    calls = []

    def stub(name):
        def log_metrics(self, metrics, step):
            calls.append((name, "log", metrics, step))

        def finalize(self, status):
            calls.append((name, "finalize", status))

        return type(name, (), {"log_metrics": log_metrics, "finalize": finalize})()

    loggers = [stub("TensorBoardLogger"), stub("WandbLogger"), stub("CSVLogger")]
    stats = {"swaps/auc": 0.75, "swaps/people": 12, "swaps/undefined": "one class", "x/auc": None}
    stats |= {"y/auc": float("nan"), "flag": True}
    assert log_scalars(loggers, stats, step=9) == 2
    sent = {"swaps/auc": 0.75, "swaps/people": 12.0}
    assert calls == [
        ("TensorBoardLogger", "log", sent, 9),
        ("TensorBoardLogger", "finalize", "success"),
        ("WandbLogger", "log", sent, 9),
        ("WandbLogger", "finalize", "success"),
    ]
    assert log_scalars(loggers, {"x/undefined": "text only"}, step=9) == 0


@pytest.mark.slow
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
    tables = {str(p.relative_to(run / "files" / "media")) for p in run.rglob("*.table.json")}
    for split in ("val", "test"):  # the PR curves (wandb.plot.pr_curve tables)
        assert any(t.startswith(f"table/{split}/pr_curve") for t in tables), (split, tables)
    assert {p.name for p in (tmp_path / "curves").iterdir()} == {
        "roc.png",
        "pr.png",
        "confusion.png",
        "sources.png",
        "sources.json",
    }
    records = next(run.glob("*.wandb")).read_bytes()
    assert b"best.ckpt" in records  # the checkpoint artifact
    assert b"swaps/auc" in records and b"val/cal_acc" in records  # computed after the test, logged too
    assert list((tmp_path / "tensorboard").glob("events.*")) and (tmp_path / "csv" / "metrics.csv").exists()
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked, leaked


def _cli(args: list[str], tmp_path: Path, cache_dir: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_cli("lmguide.train", [*args, f"hydra.run.dir={tmp_path}"], tmp_path, cache_dir, timeout)


@pytest.mark.slow
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
    """The README's exact command, bounded to a few steps and the tests' small sample of the demo's frames
    (FAST_DATA: the shared cache; the default 32 frames a video would build a cache of its own)."""
    args = ["backbone=vit", "loss.lambda_lm=0.3", "trainer.max_steps=4", *FAST_DATA]
    proc = _cli(args, tmp_path, cache_dir, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["test/auc"] <= 1.0 and (tmp_path / "checkpoints" / "best.ckpt").exists()
    ckpt = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["lmguide_overrides"]["choices"]["backbone"] == "vit"
    assert "loss.lambda_lm=0.3" in ckpt["lmguide_overrides"]["overrides"]
    assert ckpt["lmguide_config"]["model"]["backbone"]["name"] == "vit_tiny_patch16_224"


def test_cli_multirun_lambda_grid(cache_dir, tmp_path):
    """`-m loss.lambda_lm=0,1`: one job per value, each with its own directory and metrics."""
    fast_train(cache_dir, tmp_path, "loss.lambda_lm=0,1", "trainer.fast_dev_run=true", sweep=True)
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


@pytest.mark.slow
def test_periodic_checkpoints_rotate_and_early_stopping_stops(cache_dir, tmp_path):
    """One step per epoch, validated each: every step a periodic checkpoint (2 kept); early stopping on
    val/auc with an unreachable min_delta stops after the best validation plus `patience` others."""
    overrides = [
        "trainer.max_steps=12",
        "+trainer.limit_train_batches=1",
        "callbacks.periodic_checkpoint.enabled=true",
        "callbacks.periodic_checkpoint.every_n_train_steps=1",
        "callbacks.periodic_checkpoint.save_top_k=2",
        "callbacks.early_stopping.enabled=true",
        "callbacks.early_stopping.patience=2",
        "callbacks.early_stopping.min_delta=2.0",  # an AUC never improves by 2: no validation improves
        "test=false",
        "attention.num_maps=2",
    ]
    train(compose_cfg(FAST_DATA + overrides, tmp_path, cache_dir))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3  # the first validation sets the best, two more without improving
    periodic = sorted(p.name for p in (tmp_path / "checkpoints" / "periodic").iterdir())
    assert periodic == ["step000002.ckpt", "step000003.ckpt"]
    ckpt = torch.load(tmp_path / "checkpoints" / "periodic" / "step000003.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3 and "lmguide_config" in ckpt  # loadable by eval/predict like best.ckpt


def test_optional_callbacks_are_off_by_default_and_enabled_must_be_a_bool(tmp_path):
    from lmguide.runs.errors import ConfigError
    from lmguide.runs.loggers import instantiate_group

    names = {type(c).__name__ for c in instantiate_group(compose_cfg([], tmp_path).callbacks)}
    assert "EarlyStopping" not in names and "ValidateLastStep" in names
    cfg = compose_cfg(["callbacks.early_stopping.enabled=maybe"], tmp_path)
    with pytest.raises(ConfigError, match="early_stopping.enabled must be true or false, got 'maybe'"):
        instantiate_group(cfg.callbacks)


def test_the_summary_as_printed_is_in_the_run_dir(trained_ckpt):
    run = trained_ckpt.parent.parent
    text = (run / "summary.txt").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert text.splitlines()[0].strip() == "lmguide: run summary (best checkpoint)"
    assert f"{metrics['test/auc']:.4f} [" in text and f"summary          {run / 'summary.txt'}" in text
