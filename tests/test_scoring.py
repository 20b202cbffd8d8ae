"""lmguide.evaluation.scoring, the one evaluation path: train's summary and eval report the statistics of a
split under one key scheme, at the threshold the checkpoint stores (read, never calibrated again)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from lmguide.evaluation.metrics import calibrate_threshold
from lmguide.evaluation.predictions import read_predictions

from .conftest import FAST_DATA, compose_cfg, compose_entry

#: a threshold no calibration on the demo's val faces would give (every P(fake) lies far above it)
STORED = 0.0123


def _acc_at(preds: dict, threshold: float) -> float:
    p, y = np.array(preds["p_fake"]), np.array(preds["label"])
    return float(((p >= threshold) == y).mean())


def _res(n: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([0, 1] * (n // 2))
    return {
        "prob": (0.3 + 0.3 * y + 0.2 * torch.rand(n, generator=g)).clamp(0, 1),
        "label": y,
        "video": [f"v{i // 2}{'f' if i % 2 else 'r'}" for i in range(n)],
        "person": [f"p{i // 2}" for i in range(n)],
        "attn_in_lm": torch.full((n,), 0.3),
        "map_corr": torch.full((n,), 0.5),
    }


def test_train_and_eval_statistics_share_their_keys():
    """A split's statistics have one name in train's metrics.json and eval's: ``<split>/<name>``."""
    from lmguide.evaluation.run_report import split_statistics
    from lmguide.evaluation.scoring import prefixed, split_metrics

    res = _res()
    train = split_statistics({"swaps": res}, threshold=0.55)  # a set the LightningModule does not log
    evaluated = prefixed("swaps", split_metrics(res, "frame", 0.55))
    assert train == {"threshold_val": 0.55, **evaluated}
    for key in ("auc", "acc", "cal_acc", "cal_f1", "video_auc", "video_cal_acc", "auc_ci95_lo", "people"):
        assert f"swaps/{key}" in train, key
    assert not any(k.startswith(("swaps/frame/", "swaps/video/", "swaps/ckpt_")) for k in train)
    assert "swaps/cal_acc" not in split_statistics({"swaps": res}, threshold=None)  # no threshold: none


@pytest.mark.slow
def test_train_summary_and_eval_report_the_threshold_best_ckpt_stores(cache_dir, tmp_path, monkeypatch):
    """best.ckpt stores a threshold that calibrating on val again would not give: train's metrics.json
    and summary, and eval of that checkpoint, report ``cal_*`` at the stored one."""
    from lmguide.eval import evaluate
    from lmguide.models.module import LandmarkGuidedDetector
    from lmguide.training.fit import train

    calibrate = LandmarkGuidedDetector._calibrate_threshold

    def store_another(self):
        calibrate(self)
        if self.val_threshold is not None:
            self.val_threshold = {**self.val_threshold, "value": STORED}

    monkeypatch.setattr(LandmarkGuidedDetector, "_calibrate_threshold", store_another)
    monkeypatch.setenv("LMGUIDE_CACHE_DIR", str(cache_dir))  # eval's re-composed config: the same cache
    run = tmp_path / "run"
    ov = [*FAST_DATA, "attention.num_maps=2", "trainer.max_steps=2", "+trainer.limit_train_batches=1"]
    metrics = train(compose_cfg(ov, run, cache_dir), {"choices": {}, "overrides": ov})
    ckpt = run / "checkpoints" / "best.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["lmguide_threshold"]["value"] == STORED
    preds = read_predictions(run / "predictions.csv")
    val = preds["val"]
    again = calibrate_threshold(torch.tensor(val["p_fake"]), torch.tensor(val["label"]))
    assert again != pytest.approx(STORED, abs=1e-3)  # what the run used to report
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["threshold_val"] == metrics["threshold_val"] == STORED
    for split in ("val", "test"):
        assert saved[f"{split}/cal_acc"] == pytest.approx(_acc_at(preds[split], STORED), abs=1e-6), split
    assert f"P(fake) >= {STORED:.4f}" in (run / "summary.txt").read_text()
    assert not (run / "metrics.partial.json").exists()  # metrics.json holds all of it

    out = tmp_path / "eval"
    evaluated = evaluate(compose_entry("eval", f"ckpt_path={ckpt}", f"paths.output_dir={out}"))
    assert evaluated["threshold_val"] == STORED
    test = read_predictions(out / "predictions.csv")["test"]
    assert evaluated["test/cal_acc"] == pytest.approx(_acc_at(test, STORED), abs=1e-6)
    assert evaluated["test/cal_acc"] == pytest.approx(saved["test/cal_acc"], abs=1e-6)  # the same faces


def test_eval_reports_the_stored_threshold_not_one_calibrated_again(trained_ckpt, tmp_path):
    """The trained checkpoint with a threshold no calibration on val gives: eval's ``threshold_val``
    and ``cal_*`` are at it."""
    from lmguide.eval import evaluate

    ckpt = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    ckpt["lmguide_threshold"]["value"] = STORED
    path = tmp_path / "stored.ckpt"
    torch.save(ckpt, path)
    metrics = evaluate(compose_entry("eval", f"ckpt_path={path}", f"paths.output_dir={tmp_path / 'e'}"))
    preds = read_predictions(tmp_path / "e" / "predictions.csv")
    val = preds["val"]
    assert calibrate_threshold(torch.tensor(val["p_fake"]), torch.tensor(val["label"])) != STORED
    assert metrics["threshold_val"] == STORED
    assert metrics["test/cal_acc"] == pytest.approx(_acc_at(preds["test"], STORED), abs=1e-6)
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["threshold_val"] == STORED
    assert "calibrated on the validation split" in saved["threshold_note"]


def test_eval_of_a_checkpoint_without_a_threshold_says_it_calibrates_one(trained_ckpt, tmp_path, caplog):
    """No stored threshold: eval calibrates one on val, and says so in the log and in metrics.json."""
    from lmguide.eval import evaluate

    ckpt = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    del ckpt["lmguide_threshold"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with caplog.at_level(logging.WARNING, logger="lmguide.evaluation.scoring"):
        metrics = evaluate(compose_entry("eval", f"ckpt_path={old}", f"paths.output_dir={tmp_path / 'e'}"))
    (line,) = [r.getMessage() for r in caplog.records if "calibrated one on the val split" in r.getMessage()]
    assert "stores no validation-calibrated threshold" in line
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert "calibrated on the val split by this command" in saved["threshold_note"]
    val = read_predictions(tmp_path / "e" / "predictions.csv")["val"]
    want = calibrate_threshold(torch.tensor(val["p_fake"]), torch.tensor(val["label"]))
    assert metrics["threshold_val"] == pytest.approx(want, abs=1e-6)


def test_eval_scores_where_it_is_told_with_workers_and_autocast(trained_ckpt, tmp_path):
    """device=, precision= and the data's loader workers: workers change nothing, bf16 autocast moves
    P(fake) by rounding only; a device that is not there, or another precision, is refused by name."""
    from lmguide.eval import evaluate
    from lmguide.evaluation.scoring import scoring_device
    from lmguide.runs.errors import ConfigError

    def run(name, *args):
        evaluate(
            compose_entry("eval", f"ckpt_path={trained_ckpt}", f"paths.output_dir={tmp_path / name}", *args)
        )
        return read_predictions(tmp_path / name / "predictions.csv")["test"]

    base = run("fp32", "device=cpu")
    workers = run("workers", "device=auto", 'overrides=["data.num_workers=2"]')
    assert workers["key"] == base["key"] and workers["p_fake"] == base["p_fake"]
    bf16 = run("bf16", "device=cpu", "precision=bf16-mixed")
    assert bf16["key"] == base["key"]
    gap = np.abs(np.array(bf16["p_fake"]) - np.array(base["p_fake"]))
    assert 0 < gap.max() < 0.05, gap.max()  # autocast ran, and it only rounds

    assert scoring_device("auto", None)["device"].type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"precision='fp8' is not a choice"):
        scoring_device("cpu", "fp8")
    with pytest.raises(ConfigError, match=r"device='tpu' is not a"):
        scoring_device("tpu", None)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device=cuda is not available here"):
            scoring_device("cuda", None)


@pytest.mark.slow
def test_train_keeps_each_scored_set_when_a_later_one_fails(cache_dir, tmp_path, monkeypatch):
    """The end-of-run scoring writes metrics.partial.json as each set is scored: a failure in a later
    set keeps what was scored (and writes no metrics.json, which would mark a finished run)."""
    import lmguide.evaluation.run_report as run_report
    from lmguide.training.fit import train

    scored, real = [], run_report.score_split

    def fail_third(model, ds, *a, **k):
        if len(scored) == 2:
            raise RuntimeError("the third set fails")
        scored.append(k)
        return real(model, ds, *a, **k)

    monkeypatch.setattr(run_report, "score_split", fail_third)
    run = tmp_path / "run"
    ov = [*FAST_DATA, "attention.num_maps=2", "trainer.max_steps=2", "+trainer.limit_train_batches=1"]
    with pytest.raises(RuntimeError, match="the third set fails"):
        train(compose_cfg(ov, run, cache_dir), {"choices": {}, "overrides": ov})
    assert [k["device"].type for k in scored] == ["cpu", "cpu"] and scored[0]["precision"] == "32-true"
    kept = json.loads((run / "metrics.partial.json").read_text())
    assert {"val/auc_ci95_lo", "test/auc_ci95_lo", "test/video_auc"} <= set(kept), sorted(kept)
    assert 0 <= kept["test/auc"] <= 1 and not (run / "metrics.json").exists()


def test_the_summary_says_which_threshold_each_row_is_taken_at():
    from lmguide.evaluation.scoring import threshold_line

    line = threshold_line({"threshold_val": 0.84431})
    assert line.startswith("acc, f1: fake at P(fake) >= 0.5; cal_*: fake at P(fake) >= 0.8443, the threshold")
    assert threshold_line({}).startswith("acc, f1: fake at P(fake) >= 0.5; cal_*: not reported")
