"""lmguide.eval: metrics against scikit-learn, video grouping, calibration, and a real evaluation."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from lmguide.evaluation.metrics import (
    aggregate_videos,
    binary_report,
    calibrate_threshold,
    pointing_hit,
    training_metrics,
)
from lmguide.evaluation.predictions import FIELDS, read_predictions
from lmguide.runs.runtime import CONF_DIR
from lmguide.viz.curves import plot_curves

from .conftest import run_cli


def _scores(n=400, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0, 1)
    return s, y


def test_training_metrics_accumulated_over_batches_equal_sklearn_on_the_epoch():
    s, y = _scores()
    m = training_metrics("train/")
    for i in range(0, len(y), 64):  # batches of an epoch
        m.update(torch.tensor(s[i : i + 64]), torch.tensor(y[i : i + 64]))
    got = {k: float(v) for k, v in m.compute().items()}
    pred = (s >= 0.5).astype(int)
    assert got["train/auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert got["train/precision"] == pytest.approx(precision_score(y, pred), abs=1e-6)
    assert got["train/recall"] == pytest.approx(recall_score(y, pred), abs=1e-6)
    assert got["train/f1"] == pytest.approx(f1_score(y, pred), abs=1e-6)


def test_roc_and_pr_plots_name_their_auc_and_ap_in_the_legend(tmp_path, monkeypatch):
    import matplotlib.figure

    s, y = _scores()
    legends: dict[str, list[str]] = {}
    save = matplotlib.figure.Figure.savefig

    def spy(fig, path, *a, **k):
        legend = fig.axes[0].get_legend()
        legends[Path(path).stem] = [t.get_text() for t in legend.get_texts()] if legend else []
        return save(fig, path, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    plot_curves(torch.tensor(s), torch.tensor(y), 0.5, tmp_path, "test")
    assert legends["roc"] == [f"AUC = {roc_auc_score(y, s):.3f}", "chance"]
    assert legends["pr"] == [f"AP = {average_precision_score(y, s):.3f}"]
    assert {p.name for p in tmp_path.iterdir()} == {"roc.png", "pr.png", "confusion.png"}


@pytest.mark.parametrize("thr", [0.5, 0.37])
def test_binary_report_equals_sklearn(thr):
    s, y = _scores()
    got = binary_report(torch.tensor(s), torch.tensor(y), thr)
    pred = (s >= thr).astype(int)
    assert got["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-5)
    assert got["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-4)
    assert got["f1"] == pytest.approx(f1_score(y, pred), abs=1e-5)
    assert got["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-5)
    fpr, tpr, _ = roc_curve(y, s)
    i = np.argmin(np.abs((1 - tpr) - fpr))
    assert got["eer"] == pytest.approx((fpr[i] + 1 - tpr[i]) / 2, abs=0.01)


def test_calibrated_threshold_maximises_balanced_accuracy():
    s, y = _scores(seed=2)
    thr = calibrate_threshold(torch.tensor(s), torch.tensor(y))
    best = max(balanced_accuracy_score(y, (s >= t).astype(int)) for t in np.unique(s))
    assert balanced_accuracy_score(y, (s >= thr).astype(int)) == pytest.approx(best, abs=1e-9)


def test_videos_with_the_same_stem_stay_apart():
    names, scores, labels = aggregate_videos(
        torch.tensor([0.2, 0.4, 0.9, 0.7]),
        torch.tensor([1, 1, 1, 1]),
        ["Deepfakes/000_003", "Deepfakes/000_003", "Face2Face/000_003", "Face2Face/000_003"],
    )
    assert names == ["Deepfakes/000_003", "Face2Face/000_003"]
    assert torch.allclose(scores, torch.tensor([0.3, 0.8]))
    _, mx, _ = aggregate_videos(torch.tensor([0.2, 0.4]), torch.tensor([0, 0]), ["a", "a"], "max")
    assert mx.tolist() == pytest.approx([0.4])
    with pytest.raises(ValueError, match="both labels"):
        aggregate_videos(torch.tensor([0.2, 0.4]), torch.tensor([0, 1]), ["a", "a"])


def test_pointing_game():
    maps = torch.zeros(2, 1, 4, 4)
    maps[0, 0, 1, 1] = 1  # peak inside the mask
    maps[1, 0, 3, 3] = 1  # peak outside
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2, :2] = 1
    assert pointing_hit(maps, mask).tolist() == [1.0, 0.0]


def test_eval_on_a_trained_checkpoint(trained_ckpt, tmp_path):
    overrides = [f"ckpt_path={trained_ckpt}", f"paths.output_dir={tmp_path}", "logger=default"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    from lmguide.eval import evaluate

    metrics = evaluate(cfg)
    for f in ("metrics.json", "predictions.csv", "roc.png", "pr.png", "confusion.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["test/auc"] == metrics["test/auc"]
    with open(tmp_path / "predictions.csv", newline="") as f:
        assert tuple(csv.DictReader(f).fieldnames) == FIELDS  # the columns train writes
    preds = read_predictions(tmp_path / "predictions.csv")
    assert set(preds) == {"val", "test"}  # val is scored for the threshold, test was asked for
    test = preds["test"]
    assert len(test["key"]) == metrics["test/n_frames"] == len(set(test["key"]))
    assert len(set(test["video"])) == metrics["test/n_videos"]
    assert roc_auc_score(test["label"], test["p_fake"]) == pytest.approx(saved["test/auc"], abs=1e-6)
    assert 0 <= metrics["test/pointing_game"] <= 1 and 0 <= metrics["threshold_val"] <= 1
    shares = [saved[f"test/attn_{r}"] for r in ("eyes", "nose", "mouth")]  # the demo mask's regions
    assert all(0 < s < 1 for s in shares) and sum(shares) < 1
    assert -1 <= saved["test/map_corr"] <= 1  # two maps: their correlation
    logged = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))  # logger=default: CSV + TensorBoard
    assert float(logged[0]["eval/test/auc"]) == pytest.approx(metrics["test/auc"])
    assert list((tmp_path / "tensorboard").glob("events.*"))


def test_eval_cli_inside_hydra_main(trained_ckpt, cache_dir, tmp_path):
    """The command line path: load_model composes the run's config inside eval's own @hydra.main."""
    args = [f"ckpt_path={trained_ckpt}", "split=val", "video_agg=max", f"hydra.run.dir={tmp_path}"]
    proc = run_cli("lmguide.eval", args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["split"] == "val" and saved["video_agg"] == "max" and "lmguide eval" in proc.stdout


def _eval(trained_ckpt, tmp_path, extra: list[str]) -> dict:
    overrides = [f"ckpt_path={trained_ckpt}", f"paths.output_dir={tmp_path}", *extra]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    from lmguide.eval import evaluate

    evaluate(cfg)
    return json.loads((tmp_path / "metrics.json").read_text())


def test_eval_reports_bootstrap_intervals_and_face_swaps(trained_ckpt, tmp_path):
    saved = _eval(trained_ckpt, tmp_path, ['overrides=["data=demo_swaps"]'])
    for level in ("test/", "test/video_"):
        lo, auc, hi = saved[f"{level}auc_ci95_lo"], saved[f"{level}auc"], saved[f"{level}auc_ci95_hi"]
        assert lo <= auc <= hi, level
    assert saved["test/people"] >= 10  # the test people, resampled whole
    test = read_predictions(tmp_path / "predictions.csv")["test"]
    fakes = [(k, v) for k, v, y in zip(test["key"], test["video"], test["label"], strict=True) if y == 1]
    assert fakes and all(k.startswith("swap:") and v.startswith("swap:") for k, v in fakes)  # face swaps


def test_eval_on_one_class_reports_undefined_not_numbers(trained_ckpt, tmp_path):
    # without self-blending the demo's splits hold real faces only: AUC, AP, EER have no meaning
    saved = _eval(trained_ckpt, tmp_path, ['overrides=["data.fakes=null"]'])
    for level in ("test/", "test/video_"):
        assert all(saved[f"{level}{k}"] is None for k in ("auc", "eer", "ap"))
        assert saved[f"{level}auc_ci95_lo"] is None
        assert "one class only" in saved[f"{level}undefined"] and "0 fake" in saved[f"{level}undefined"]
    assert saved["test/acc"] is not None  # a threshold metric is still defined


def _readme_eval_section() -> str:
    from lmguide.runs.runtime import ROOT_DIR

    text = (ROOT_DIR / "README.md").read_text()
    return text.split("## After training: evaluate", 1)[1].split("\n## ", 1)[0]


def test_eval_table_names_video_agg_and_the_readme_shows_that_header(tmp_path, capsys):
    """The video column is an aggregate of frame scores (``video_agg``): its header says which, and the
    README quotes the header as eval prints it."""
    from lmguide.eval import _print

    keys = ("auc", "ap", "eer", "acc", "balanced_acc", "cal_acc", "cal_balanced_acc")
    keys += ("precision", "recall", "f1", "cal_f1")
    metrics = {f"test/{level}{k}": 0.5 for level in ("", "video_") for k in keys}
    metrics |= {"threshold_val": 0.5, "test/attn_in_lm": 0.3, "test/pointing_game": 0.4}
    metrics |= {"test/n_frames": 12, "test/n_videos": 4}
    for agg in ("mean", "max"):
        _print(metrics, "test", tmp_path, "frame", agg)
        header = next(ln for ln in capsys.readouterr().out.splitlines() if " metric " in ln)
        assert [c.strip() for c in header.strip("┃ ").split("┃")] == ["metric", "frame", f"video ({agg})"]
    assert "`metric | frame | video (mean)`" in _readme_eval_section()  # the default video_agg


def test_readme_eval_examples_change_something_and_point_at_evals_logs():
    """No example passes a group's default (``data=demo`` is what eval uses anyway), and its TensorBoard
    line points at eval's own log folder."""
    import shlex

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        default_data = compose("train", return_hydra_config=True).hydra.runtime.choices.data
    section = _readme_eval_section()
    commands = [ln.split("  #")[0] for ln in section.splitlines() if ln.startswith("python -m lmguide.eval")]
    assert len(commands) >= 3
    for cmd in commands:
        assert f"data={default_data}" not in shlex.split(cmd), cmd
    logdirs = [ln.split()[2] for ln in section.splitlines() if ln.startswith("tensorboard --logdir")]
    assert logdirs == ["logs/eval"]
