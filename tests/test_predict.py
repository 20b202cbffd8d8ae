"""``lmguide.predict``: real demo media scored with the tiny checkpoint trained by the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from lmguide.data.media import plan_frames
from lmguide.predict import predict

from .conftest import compose_entry, run_cli

FRAMES = 4  # frames per video: keeps MediaPipe + model at a few seconds per video


def predict_cfg(ckpt: Path, input_path: Path | str, out_dir: Path, *extra: str):
    return compose_entry(
        "predict",
        f"ckpt_path={ckpt}",
        f"input={input_path}",
        f"paths.output_dir={out_dir}",
        f"frames_per_video={FRAMES}",
        *extra,
    )


@pytest.fixture(scope="module")
def mixed_folder(media, tmp_path_factory) -> Path:
    """Images and videos in nested folders, a no-face image and video, a corrupt image and a text file."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "videos" / "more").mkdir(parents=True)
    shutil.copy(media["single_face.jpg"], root / "single_face.jpg")
    shutil.copy(media["free-mountain-vector-01.jpg"], root / "mountain.jpg")
    shutil.copy(media["no_face.mp4"], root / "videos" / "no_face.mp4")
    shutil.copy(media["single_face.mp4"], root / "videos" / "more" / "face.mp4")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg" * 50)
    (root / "notes.txt").write_text("not media\n")
    return root


@pytest.fixture(scope="module")
def folder_run(trained_ckpt, mixed_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict_folder")
    cfg = predict_cfg(trained_ckpt, mixed_folder, out, f"output={out / 'preds.csv'}")
    return predict(cfg), out / "preds.csv"


def best_run(probs: list[float], k: int) -> float:
    """The highest score that k sampled frames in a row all reach (the verdict rule's video score)."""
    return max(min(probs[i : i + k]) for i in range(len(probs) - k + 1))


def test_plan_frames():
    assert plan_frames(72, 4, None) == [0, 24, 47, 71]
    assert plan_frames(10, 32, None) == list(range(10))  # never more frames than the video has
    assert plan_frames(10, None, None) == list(range(10))
    assert plan_frames(10, 4, 3) == [0, 3, 6, 9]  # frames_every replaces frames_per_video


def test_video_scores_every_sampled_frame_and_writes_json(trained_ckpt, media, tmp_path):
    out = tmp_path / "video.json"
    (res,) = predict(predict_cfg(trained_ckpt, media["single_face.mp4"], tmp_path, f"output={out}"))
    assert res.kind == "video" and res.status == "ok"
    assert [f.frame for f in res.frames] == [0, 24, 47, 71]  # 4 evenly spaced frames of 72
    assert res.frames_scored == FRAMES and res.frames_no_face == 0 and res.frames_unreadable == 0
    probs = [f.prob_fake for f in res.frames]
    assert all(0.0 <= p <= 1.0 for p in probs)
    # the default rule: the best run of 2 frames in a row, scored by its lower frame
    assert res.prob_fake == pytest.approx(best_run(probs, 2))
    assert res.verdict == ("fake" if res.prob_fake >= res.threshold else "real")

    doc = json.loads(out.read_text())
    (row,) = doc["files"]
    assert row["status"] == "ok" and row["frames_scored"] == FRAMES
    assert row["prob_fake"] == pytest.approx(best_run([f["prob_fake"] for f in row["frames"]], 2))
    assert row["rule"] == "2 sampled frames in a row with a face >= threshold"
    assert [f["frame"] for f in row["frames"]] == [0, 24, 47, 71]
    assert all(f["face"] == 0 and len(f["box"]) == 4 for f in row["frames"])


def test_frames_every_streams_every_kth_frame(trained_ckpt, media, tmp_path):
    (res,) = predict(predict_cfg(trained_ckpt, media["single_face.mp4"], tmp_path, "frames_every=30"))
    assert [f.frame for f in res.frames] == [0, 30, 60]
    assert res.frames_scored == 3


def test_image_score_matches_the_training_crop(trained_ckpt, media, cache_dir, tmp_path):
    """The face is cropped exactly as training cached it: same P(fake) as the cached crop's."""
    import cv2
    import hydra
    import torch

    from lmguide.data.prepare import prepare_index
    from lmguide.data.transforms import build_transform
    from lmguide.training.checkpoint import load_model

    (res,) = predict(predict_cfg(trained_ckpt, media["single_face.jpg"], tmp_path))
    assert res.status == "ok" and res.frames_scored == 1
    model, run_cfg = load_model(trained_ckpt, [f"paths.cache_dir={cache_dir}"], output_dir=tmp_path)
    dm = hydra.utils.instantiate(run_cfg.data)  # the cache the checkpoint was trained on
    index = prepare_index(dm.source.name, dm.source.items(), dm.cache_dir, dm.faces, dm.mask, read_only=True)
    (row,) = [r for r in index.rows if r["source"] == "single_face.jpg" and r["status"] == "ok"]
    crop = cv2.cvtColor(cv2.imread(str(index.root / row["image"])), cv2.COLOR_BGR2RGB)
    x = build_transform(run_cfg.data.image_size)(image=crop)["image"][None]
    with torch.no_grad():
        expected = model(x).logits.softmax(-1)[0, 1].item()
    assert res.frames[0].prob_fake == pytest.approx(expected, abs=1e-5)
    assert res.frames[0].det_score == pytest.approx(float(row["det_score"]), abs=1e-3)


def test_no_face_image_is_reported_not_scored(trained_ckpt, media, tmp_path, capsys):
    (res,) = predict(predict_cfg(trained_ckpt, media["free-mountain-vector-01.jpg"], tmp_path))
    assert res.status == "no_face" and res.prob_fake is None
    assert res.frames_scored == 0 and res.frames_no_face == 1
    assert "no face found in: " in capsys.readouterr().out


def test_folder_mixed_media(folder_run, capsys):
    results, csv_path = folder_run
    by_name = {r.file: r for r in results}
    # recursive, sorted by path; the text file is left out (and said so), the corrupt image is kept
    assert list(by_name) == [
        "broken.jpg",
        "mountain.jpg",
        "single_face.jpg",
        "videos/more/face.mp4",
        "videos/no_face.mp4",
    ]
    assert by_name["broken.jpg"].status == "unreadable" and "could not decode" in by_name["broken.jpg"].reason
    assert by_name["mountain.jpg"].status == "no_face"
    assert by_name["videos/no_face.mp4"].status == "no_face"
    assert by_name["videos/no_face.mp4"].frames_scored == 0
    assert by_name["videos/no_face.mp4"].frames_no_face >= 1
    assert by_name["single_face.jpg"].status == "ok" and by_name["single_face.jpg"].frames_scored == 1
    face = by_name["videos/more/face.mp4"]
    assert face.status == "ok" and face.frames_scored == FRAMES

    rows = list(csv.DictReader(csv_path.open()))
    files = [r for r in rows if r["level"] == "file"]
    assert [r["file"] for r in files] == list(by_name)
    assert {r["file"]: r["status"] for r in files} == {n: r.status for n, r in by_name.items()}
    # unscored files have an empty score, scored ones the rule's score of their frame rows
    assert [r["prob_fake"] for r in files if r["status"] != "ok"] == ["", "", ""]
    frames = [r for r in rows if r["level"] == "frame" and r["file"] == "videos/more/face.mp4"]
    assert len(frames) == FRAMES
    video_row = next(r for r in files if r["file"] == "videos/more/face.mp4")
    run = best_run([float(r["prob_fake"]) for r in frames], 2)
    assert float(video_row["prob_fake"]) == pytest.approx(run, abs=1e-5)
    assert video_row["rule"] == "2 sampled frames in a row with a face >= threshold"
    image_row = next(r for r in files if r["file"] == "single_face.jpg")
    assert image_row["rule"] == "any face >= threshold"
    assert int(video_row["frames_scored"]) == FRAMES


def test_missing_and_unsupported_inputs(trained_ckpt, tmp_path):
    missing = tmp_path / "nope" / "clip.mp4"
    with pytest.raises(FileNotFoundError, match="clip.mp4 does not exist"):
        predict(predict_cfg(trained_ckpt, missing, tmp_path))
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(ValueError, match="notes.txt is not a supported image or video"):
        predict(predict_cfg(trained_ckpt, notes, tmp_path))
    with pytest.raises(ValueError, match=r"must end in \.csv or \.json"):
        predict(predict_cfg(trained_ckpt, notes, tmp_path, f"output={tmp_path / 'out.txt'}"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image or video"):
        predict(predict_cfg(trained_ckpt, empty, tmp_path))


def test_cli(trained_ckpt, mixed_folder, cache_dir, tmp_path):
    out = tmp_path / "preds.json"
    args = [
        f"ckpt_path={trained_ckpt}",
        f"input={mixed_folder / 'videos'}",
        f"output={out}",
        "frames_per_video=2",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = run_cli("lmguide.predict", args, tmp_path, cache_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verdict per file" in proc.stdout
    assert "no face found in: no_face.mp4" in proc.stdout
    from lmguide.training.checkpoint import read_checkpoint
    from lmguide.training.provenance import provenance_line

    line = provenance_line(read_checkpoint(trained_ckpt)["lmguide_provenance"])  # the run's record
    assert line.startswith("trained on ") and line.endswith(
        "A demonstration model, not a production detector"
    )
    assert line in " ".join(proc.stdout.split())
    doc = json.loads(out.read_text())
    assert [f["file"] for f in doc["files"]] == ["more/face.mp4", "no_face.mp4"]
    assert [f["frames_scored"] for f in doc["files"]] == [2, 0]
    assert 0.0 <= doc["files"][0]["prob_fake"] <= 1.0


@pytest.mark.parametrize("detector", ["full", "none"])
def test_predict_scores_tight_face_crops(detector, trained_ckpt, media, tmp_path):
    """Crops the full-range model alone misses (issue 15): the short-range fallback finds them, and
    data.faces.detector=none scores the crop as it is."""
    folder = tmp_path / "crops"
    folder.mkdir()
    names = ["obama4_crop.jpg", "chuck_crop.jpg", "ri_1_crop.jpg", "walter2_crop.jpg", "cage2_crop.jpg"]
    for n in names:
        shutil.copy(media[n], folder / n)
    results = predict(
        predict_cfg(trained_ckpt, folder, tmp_path, f'overrides=["data.faces.detector={detector}"]')
    )
    assert sorted(r.file for r in results) == sorted(names)
    for r in results:
        assert r.status == "ok" and r.frames_scored == 1 and r.frames_no_face == 0, (r.file, r.reason)


def test_an_existing_output_is_kept_unless_overwrite_and_a_link_is_never_written(
    trained_ckpt, media, tmp_path
):
    """predict used to replace an existing output silently and write through a symbolic link (``ln -s
    notes.txt o.csv`` replaced notes.txt): both are refused before the model loads; overwrite=true
    replaces a plain file."""
    from lmguide.runs.errors import ConfigError

    face = media["single_face.jpg"]
    old = tmp_path / "old.csv"
    old.write_text("keep me\n")
    with pytest.raises(ConfigError, match=r"old\.csv exists: give overwrite=true to replace it"):
        predict(predict_cfg(trained_ckpt, face, tmp_path, f"output={old}"))
    assert old.read_text() == "keep me\n"
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    link = tmp_path / "o.csv"
    link.symlink_to(notes)
    for extra in ([], ["overwrite=true"]):
        with pytest.raises(ConfigError, match="is a symbolic link: lmguide does not write through links"):
            predict(predict_cfg(trained_ckpt, face, tmp_path, f"output={link}", *extra))
    assert notes.read_text() == "my notes\n" and link.is_symlink()
    predict(predict_cfg(trained_ckpt, face, tmp_path, f"output={old}", "overwrite=true"))
    assert old.read_text().startswith("level,file,")
