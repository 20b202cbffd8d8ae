"""Clip (video) checkpoints after training (issue 17): eval scores the split's clips, predict cuts a
video's face track into clips exactly as training's ClipDataset does, visualize draws a clip's attention
as a strip. A tiny untrained efficientnet_lstm (clips of 2 frames, 64 px) on the FAST_DATA demo cache."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from lmguide.data.clips import clip_windows
from lmguide.predict import predict
from lmguide.training.checkpoint import load_model

from .conftest import FAST_DATA, compose_cfg, compose_entry

CLIP = 2
THRESHOLD = 0.3  # stored in the checkpoint as training stores its calibrated one


@pytest.fixture(scope="module")
def clip_ckpt(cache_dir, tmp_path_factory) -> Path:
    """What a clip run would write, minus the training: the model built from the real config."""
    out = tmp_path_factory.mktemp("clip_ckpt")
    overrides = [
        "backbone=efficientnet_lstm",
        f"backbone.clip_frames={CLIP}",
        "data.image_size=64",
        "attention.num_maps=2",
        f"paths.cache_dir={cache_dir}",
        *FAST_DATA,
    ]
    cfg = compose_cfg(overrides, out)
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model)
    path = out / "clip.ckpt"
    ckpt = {
        "state_dict": model.state_dict(),
        "lmguide_config": OmegaConf.to_container(cfg.model, resolve=False),
        "lmguide_overrides": {"choices": {}, "overrides": overrides},
        "lmguide_threshold": {"value": THRESHOLD, "step": 1},
    }
    torch.save(ckpt, path)
    return path


def test_clip_windows_are_the_datasets():
    assert clip_windows(5, 2) == [[0, 1], [2, 3], [3, 4]]  # the last window overlaps: every frame used
    assert clip_windows(1, 3) == [[0, 0, 0]]  # a still image: repeat-padded
    assert clip_windows(1, 3, min_frames=2) == []  # skipped


def test_load_model_gives_a_clip_model(clip_ckpt, tmp_path):
    model, cfg = load_model(clip_ckpt, output_dir=tmp_path)
    assert model.clip_frames == CLIP and cfg.data.clip_frames == CLIP


def test_predict_clip_scores_equal_the_model_on_trainings_cached_clips(clip_ckpt, media, tmp_path):
    """The key check: for a video and a still image of the val split, predict's clips hold the frames of
    ClipDataset's clips of that file, and each score is the model's output on the cached clip."""
    model, run_cfg = load_model(clip_ckpt, output_dir=tmp_path)
    dm = hydra.utils.instantiate(run_cfg.data)
    dm.prepare_data()
    dm.setup("test")
    ds = dm.datasets["val"]  # a ClipDataset with fakes: item 2k is real clip k
    folder = tmp_path / "in"
    folder.mkdir()
    expected: dict[str, dict[tuple[int, ...], float]] = {}
    for name in ("single_face.mp4", "single_face.jpg"):
        shutil.copy(media[name], folder / name)
        ks = [k for k, c in enumerate(ds.clips) if c[0]["source"] == name]
        assert ks, name
        with torch.no_grad():
            expected[name] = {
                tuple(r["frame"] for r in ds.clips[k]): model(ds[2 * k]["image"][None])
                .logits.softmax(-1)[0, 1]
                .item()
                for k in ks
            }
    out = tmp_path / "preds.csv"
    cfg = compose_entry(
        "predict",
        f"ckpt_path={clip_ckpt}",
        f"input={folder}",
        f"paths.output_dir={tmp_path}",
        f"output={out}",
    )
    results = {r.file: r for r in predict(cfg)}
    assert expected["single_face.mp4"].keys() == {(0, 36), (36, 71)}  # 3 sampled frames of 72, clips of 2
    assert expected["single_face.jpg"].keys() == {(0, 0)}  # a still image: a repeat-padded clip
    for name, want in expected.items():
        r = results[name]
        got = {tuple(c.frames): c.prob_fake for c in r.clips}
        assert got.keys() == want.keys(), name
        for frames, p in want.items():
            assert got[frames] == pytest.approx(p, abs=1e-5), (name, frames)
        assert r.prob_fake == pytest.approx(max(want.values()), abs=1e-5)  # any clip: the most suspect
        assert r.threshold == THRESHOLD and r.verdict == ("fake" if r.prob_fake >= THRESHOLD else "real")
    assert results["single_face.jpg"].clips[0].padded and "repeat-padded" in results["single_face.jpg"].reason
    rows = [r for r in csv.DictReader(out.open()) if r["level"] == "clip" and r["file"] == "single_face.mp4"]
    assert [(r["clip"], r["frame"], r["frame_last"], r["padded"]) for r in rows] == [
        ("0", "0", "36", "0"),
        ("1", "36", "71", "0"),
    ]


def test_predict_skips_a_track_under_clip_min_frames_with_a_note(clip_ckpt, media, tmp_path):
    out = tmp_path / "p.json"
    cfg = compose_entry(
        "predict",
        f"ckpt_path={clip_ckpt}",
        f"input={media['single_face.jpg']}",
        f"paths.output_dir={tmp_path}",
        f"output={out}",
        'overrides=["data.clip_min_frames=2"]',
    )
    (r,) = predict(cfg)
    assert r.status == "too_short" and r.prob_fake is None and not r.clips
    assert "1 frame(s) < data.clip_min_frames=2" in r.reason and "skipped" in r.reason
    assert json.loads(out.read_text())["files"][0]["status"] == "too_short"


def test_eval_on_a_clip_checkpoint_scores_the_test_clips(clip_ckpt, tmp_path):
    from lmguide.eval import evaluate

    cfg = compose_entry("eval", f"ckpt_path={clip_ckpt}", f"paths.output_dir={tmp_path}")
    metrics = evaluate(cfg)
    model, run_cfg = load_model(clip_ckpt, output_dir=tmp_path / "m")
    dm = hydra.utils.instantiate(run_cfg.data)
    dm.setup("test")
    assert metrics["test/n_clips"] == len(dm.datasets["test"]) and "test/n_frames" not in metrics
    assert 0.0 <= metrics["test/auc"] <= 1.0 and 0.0 <= metrics["test/video_auc"] <= 1.0
    assert 0.0 <= metrics["test/attn_in_lm"] <= 1.0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["unit"] == "clip" and saved["test/auc"] == metrics["test/auc"]
    rows = [r for r in csv.DictReader(open(tmp_path / "predictions.csv")) if r["split"] == "test"]
    assert len(rows) == metrics["test/n_clips"] == len({r["key"] for r in rows})  # a row per clip
    assert len({r["video"] for r in rows}) == metrics["test/n_videos"]


def test_visualize_draws_a_clips_attention_strip(clip_ckpt, media, tmp_path):
    import cv2

    from lmguide.runs.errors import VisualizeError
    from lmguide.visualize import visualize

    def cfg(*extra):
        return compose_entry(
            "visualize",
            f"ckpt_path={clip_ckpt}",
            f"input={media['single_face.mp4']}",
            f"paths.output_dir={tmp_path}",
            "size=64",
            *extra,
        )

    res = visualize(cfg("clip=1"))
    assert res["clip"].frames == [36, 71]
    strip = cv2.imread(str(res["paths"]["clip_strip"]))
    assert strip is not None and strip.shape[1] >= CLIP * 64 and strip.std() > 10
    (pred,) = predict(
        compose_entry(
            "predict",
            f"ckpt_path={clip_ckpt}",
            f"input={media['single_face.mp4']}",
            f"paths.output_dir={tmp_path}",
        )
    )
    assert res["prob_fake"] == pytest.approx(pred.clips[1].prob_fake, abs=1e-5)
    with pytest.raises(VisualizeError, match=r"clip=5: .*single_face.mp4 has clips 0\.\.1"):
        visualize(cfg("clip=5"))


def test_the_web_page_refuses_a_clip_model_by_name(clip_ckpt, tmp_path):
    from lmguide.inference.page import Analyzer
    from lmguide.training.checkpoint import CheckpointError

    cfg = compose_entry("app", f"ckpt_path={clip_ckpt}", f"paths.output_dir={tmp_path}")
    with pytest.raises(
        CheckpointError, match=r"clip.ckpt is a video \(clip\) model: the web page .*lmguide.predict"
    ):
        Analyzer.from_cfg(cfg)
