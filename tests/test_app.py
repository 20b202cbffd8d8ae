"""``lmguide.app`` without a browser: the per-face results against predict's numbers, the stored
validation threshold against eval's, and the page's messages for bad input (the browser test is in
``test_app_browser.py``, slow tier)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from lmguide.predict import predict
from lmguide.runs.runtime import CONF_DIR

from .conftest import compose_entry, missing_checkpoint_line
from .test_predict import predict_cfg

FRAMES = 4


def app_cfg(ckpt: Path, out_dir: Path, *extra: str):
    return compose_entry(
        "app", f"ckpt_path={ckpt}", f"paths.output_dir={out_dir}", f"frames_per_video={FRAMES}", *extra
    )


@pytest.fixture(scope="module")
def analyzer(trained_ckpt, tmp_path_factory):
    from lmguide.inference.page import Analyzer

    return Analyzer.from_cfg(app_cfg(trained_ckpt, tmp_path_factory.mktemp("app")))


def test_config_binds_to_localhost_only(trained_ckpt, tmp_path):
    cfg = app_cfg(trained_ckpt, tmp_path)
    assert cfg.host == "127.0.0.1" and isinstance(cfg.port, int)
    assert (CONF_DIR / "app.yaml").read_text().startswith("# ")


def test_training_stores_the_val_calibrated_threshold_eval_computes(trained_ckpt, tmp_path):
    """best.ckpt holds the threshold calibrated on the validation that wrote it: the same number eval
    calibrates on the val split with those weights."""
    from lmguide.eval import evaluate
    from lmguide.training.checkpoint import load_model, verdict_threshold

    stored = torch.load(trained_ckpt, map_location="cpu", weights_only=True)["lmguide_threshold"]
    assert stored["split"] == "val" and 0.0 <= stored["value"] <= 1.0 and stored["frames"] > 0
    model, _ = load_model(trained_ckpt, output_dir=tmp_path)
    thr, note = verdict_threshold(model)
    assert thr == stored["value"] and "calibrated on the validation split" in note
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "eval", overrides=[f"ckpt_path={trained_ckpt}", f"paths.output_dir={tmp_path}", "split=val"]
        )
    metrics = evaluate(cfg)
    assert metrics["threshold_val"] == pytest.approx(stored["value"], abs=1e-5)
    assert metrics["val/n_frames"] == stored["frames"]


def test_a_checkpoint_without_a_threshold_falls_back_to_one_half_with_a_note(analyzer, media):
    from lmguide.app import result_markdown
    from lmguide.inference.page import Analyzer

    model = analyzer.model
    stored, model.val_threshold = model.val_threshold, None  # as loaded from an older checkpoint
    try:
        old = Analyzer(model, analyzer.run_cfg, frames_per_video=FRAMES)
    finally:
        model.val_threshold = stored
    assert old.threshold == 0.5
    a = old.analyse(media["single_face.jpg"])
    assert a.verdict == ("fake" if a.prob_fake >= 0.5 else "real")
    assert (
        "Threshold 0.500: 0.5: this checkpoint stores no validation-calibrated threshold"
        in result_markdown(a)
    )


@pytest.mark.parametrize(
    "stored", [{"value": float("nan")}, {"value": 7.0}, {"value": True}, {"value": "0.3"}, ["0.3"]]
)
def test_a_stored_threshold_that_is_no_probability_is_not_used(stored):
    """The threshold comes from a file a user was given: only a number in [0, 1] is taken from it."""
    from types import SimpleNamespace

    from lmguide.training.checkpoint import verdict_threshold

    assert verdict_threshold(SimpleNamespace(val_threshold=stored)) == (
        0.5,
        "0.5: this checkpoint's stored threshold is not a probability in [0, 1]",
    )
    # the step is shown on the page: anything but an integer is left out of the note
    thr, note = verdict_threshold(SimpleNamespace(val_threshold={"value": 0.25, "step": "<b>x</b>"}))
    assert thr == 0.25 and note == "calibrated on the validation split (max balanced accuracy)"


@pytest.mark.parametrize("name", ["single_face.jpg", "multi_face.jpg"])
def test_image_faces_score_as_predict_does(analyzer, trained_ckpt, media, name, tmp_path):
    """Every face: predict's P(fake) for the same image, the verdict at the stored threshold, and
    visualize's pictures of the same crop (whose own forward pass gives the same P(fake))."""
    a = analyzer.analyse(media[name])
    (ref,) = predict(predict_cfg(trained_ckpt, media[name], tmp_path, "print_frames=false"))
    expected = {f.face: f.prob_fake for f in ref.frames if f.prob_fake is not None}
    assert (
        a.kind == "image"
        and len(a.faces) == len(expected)
        and (len(a.faces) > 1) == (name == "multi_face.jpg")
    )
    assert a.prob_fake == pytest.approx(ref.prob_fake, abs=1e-7)
    assert a.verdict == ref.verdict and a.rule == ref.decision.rule == "any face >= threshold"
    assert a.threshold == analyzer.threshold and a.verdict == (
        "fake" if a.prob_fake >= a.threshold else "real"
    )
    for f in a.faces:
        assert f.prob_fake == pytest.approx(expected[f.face], abs=1e-7)
        assert f.verdict == ("fake" if f.prob_fake >= a.threshold else "real")
        assert f.explained_prob == pytest.approx(f.prob_fake, abs=1e-5)
        captions = [c for _, c in f.tiles]
        heads = [c for c in captions if ": head " in c]
        assert len(heads) == 2  # attention.num_maps=2 in the trained checkpoint
        assert any("mean attention" in c for c in captions) and any("Grad-CAM" in c for c in captions)
        for img, _ in f.tiles:  # heat maps are as tall as the crop, wider by their colour bar
            assert img.shape[0] == 256 and img.shape[1] >= 256 and img.shape[2] == 3 and img.dtype == np.uint8
        assert f.tiles[0][0].shape == (256, 256, 3) and f.tiles[1][0].shape[1] > 256
        crop, attn = f.tiles[0][0], f.tiles[1][0]
        assert not np.array_equal(crop, attn)  # the overlay is drawn over the crop


def test_video_plot_points_are_predicts_frame_scores(analyzer, trained_ckpt, media, tmp_path):
    from lmguide.app import respond

    a = analyzer.analyse(media["single_face.mp4"])
    (ref,) = predict(predict_cfg(trained_ckpt, media["single_face.mp4"], tmp_path, "print_frames=false"))
    assert [f for f, _ in a.frame_scores] == [0, 24, 47, 71]
    assert np.allclose([p for _, p in a.frame_scores], [f.prob_fake for f in ref.frames], atol=1e-7)
    assert a.prob_fake == pytest.approx(ref.prob_fake, abs=1e-7) and a.verdict == ref.verdict
    assert a.fake_frames == ref.decision.fake_frames and a.fake_run == ref.decision.run
    top = max(a.frame_scores, key=lambda fp: fp[1])
    assert len(a.faces) == 1 and (a.faces[0].frame, a.faces[0].prob_fake) == top
    md, tiles, plot = respond(analyzer, media["single_face.mp4"])
    assert f"P(fake) = {ref.prob_fake:.4f}" in md and len(tiles) == 5
    assert plot.ndim == 3 and plot.shape[2] == 3 and plot.dtype == np.uint8


def test_bad_inputs_get_a_message_and_the_analyzer_keeps_working(analyzer, media, tmp_path):
    from lmguide.app import respond
    from lmguide.inference.page import AppInputError

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg" * 50)
    text = tmp_path / "notes.txt"
    text.write_text("not media\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    big = tmp_path / "big.jpg"  # 50 megapixels: refused from its header, never decoded
    ok, buf = cv2.imencode(".jpg", np.full((5000, 10000, 3), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])
    big.write_bytes(buf.tobytes())
    del buf
    big_video = tmp_path / "big.avi"  # 2 frames of 30 megapixels: refused from the header, none decoded
    vw = cv2.VideoWriter(str(big_video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (6000, 5000))
    for _ in range(2):
        vw.write(np.full((5000, 6000, 3), 100, np.uint8))
    vw.release()
    cases = {
        broken: "broken.jpg could not be read as an image",
        text: "notes.txt is neither an image",
        empty: "empty.png is empty (0 bytes)",
        media["no_face.mp4"]: "no face found in no_face.mp4: no face detected in 3 scanned frames",
        media["free-mountain-vector-01.jpg"]: "no face found in free-mountain-vector-01.jpg",
        big: "big.jpg is 10000x5000 pixels (50 megapixels), above this page's limit of 25",
        big_video: "big.avi has frames of 6000x5000 pixels (30 megapixels), above this page's limit of 25",
        None: "no file: upload an image or a short video",
    }
    for path, message in cases.items():
        t0 = time.perf_counter()
        with pytest.raises(AppInputError) as err:
            analyzer.analyse(path)
        assert message in str(err.value), (path, str(err.value))
        if path in (big, big_video):
            assert time.perf_counter() - t0 < 1.0  # the header alone is read
        md, tiles, plot = respond(analyzer, path)
        assert md.startswith("### Cannot analyse this file") and message in md
        assert tiles == [] and plot is None
    a = analyzer.analyse(media["single_face.jpg"])  # still serving
    assert len(a.faces) == 1 and 0.0 <= a.prob_fake <= 1.0


def test_result_markdown_lists_every_face(analyzer, media):
    from lmguide.app import markdown_text, result_markdown

    a = analyzer.analyse(media["multi_face.jpg"])
    md = result_markdown(a)
    assert f"P(fake) = {a.prob_fake:.4f} → **{a.verdict}**" in md
    for f in a.faces:
        assert f"| {f.face} | 0 | {f.prob_fake:.4f} | {f.verdict} |" in md
    assert f"Threshold {a.threshold:.3f}: calibrated on the validation split" in md
    assert analyzer.provenance.startswith("trained on ") and "test AUC" in analyzer.provenance
    assert f"*Model: {markdown_text(analyzer.provenance)}.*" in md


def test_a_checkpoints_provenance_is_shown_as_text_not_markup(analyzer, media):
    from lmguide.app import result_markdown

    a = analyzer.analyse(media["single_face.jpg"])
    a.provenance = "trained on <script>alert(1)</script> **x** [l](http://e)"
    md = result_markdown(a)
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert r"\*\*x\*\*" in md and r"\[l\](http://e)" in md


def test_cli_refuses_a_missing_checkpoint_in_one_line(tmp_path, cache_dir):
    code, line, missing = missing_checkpoint_line("lmguide.app", tmp_path, cache_dir)
    assert code == 1 and line == f"error: checkpoint {missing} does not exist"


def test_page_builds_with_its_components_offline(analyzer, media, monkeypatch):
    """The Blocks of the page (not launched): its upload, demo list and outputs; analytics off."""
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    from lmguide.app import build_page

    page = build_page(analyzer, {"single_face.jpg": media["single_face.jpg"]})
    ids = {getattr(b, "elem_id", None): b for b in page.blocks.values()}
    assert {"upload", "demo", "result", "faces", "plot"} <= set(ids)
    assert ids["demo"].choices == [("single_face.jpg", "single_face.jpg")]
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and page.analytics_enabled is False


def test_several_uploads_are_listed_with_their_verdicts(analyzer, media):
    from lmguide.app import markdown_text, respond_many, verdicts

    files = [str(media["single_face.jpg"]), str(media["no_face.mp4"]), str(media["multi_face.jpg"])]
    md, tiles, plot = respond_many(analyzer, files)
    records = verdicts(analyzer, files)
    assert md.startswith("### 3 files") and f"| {markdown_text('no_face.mp4')} | not analysed |" in md
    for r in (records[0], records[2]):
        assert f"| {markdown_text(r['file'])} | {r['verdict']} |" in md
    assert "no face found in no_face.mp4" in records[1]["error"] and plot is None
    captions = [c for _, c in tiles]
    assert any(c.startswith("single_face.jpg: face 0") for c in captions)
    assert any(c.startswith("multi_face.jpg: face 1") for c in captions)
