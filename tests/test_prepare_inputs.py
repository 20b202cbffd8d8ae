"""What the landmark cache builder makes of real-world inputs: broken and unusual files, low scores,
face policies, layouts end to end (CLI and datamodule), CLI errors and a parallel MediaPipe pass."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest

from lmguide.data import prepare as prep
from lmguide.data.faces import Detection, FaceDetector, FaceFinder, FaceSettings
from lmguide.data.landmarks import NUM_LANDMARKS
from lmguide.data.layouts.base import SourceItem
from lmguide.data.manifest import PreparedIndex, read_manifest, status_table, unusable_sources
from lmguide.data.masks import MaskSpec
from lmguide.data.media import read_image

from .conftest import compose_cfg, run_cli

# two frames per video and one process keep MediaPipe at well under a second per file
FS = FaceSettings(frames_per_video=2)
GREY = 90  # the flat background of the huge canvas


def _reencode(frames: list[np.ndarray], dst: Path, fps: int = 10) -> bytes:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    assert dst.stat().st_size > 0
    return dst.read_bytes()


def _first_frames(path: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = [cap.read()[1] for _ in range(n)]
    cap.release()
    assert all(f is not None for f in frames), path
    return frames


@pytest.fixture(scope="module")
def clips(media, tmp_path_factory) -> dict[str, bytes]:
    """Short mp4v re-encodes (6 frames) of the face and no-face videos, and a 2-frame group photo clip."""
    tmp = tmp_path_factory.mktemp("clips")
    group = cv2.imread(str(media["multi_face.jpg"]))[:666]  # even height for the encoder
    return {
        "face": _reencode(_first_frames(media["single_face.mp4"], 6), tmp / "face.mp4"),
        "noface": _reencode(_first_frames(media["no_face.mp4"], 6), tmp / "noface.mp4"),
        "group": _reencode([group, group], tmp / "group.mp4"),
    }


def _by_source(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["source"], []).append(r)
    return out


def _load_ok(index: PreparedIndex, row: dict) -> tuple[np.ndarray, np.ndarray]:
    crop = cv2.imread(str(index.root / row["image"]), cv2.IMREAD_UNCHANGED)
    lms = np.load(index.root / row["landmarks"], allow_pickle=False)
    return crop, lms


# --------------------------------------------------------------------------- bad and unusual inputs


@pytest.fixture(scope="module")
def odd_inputs(media, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("odd")
    face = cv2.imread(str(media["single_face.jpg"]))
    video = media["single_face.mp4"].read_bytes()
    (d / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    (d / "truncated.mp4").write_bytes(video[: len(video) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.png").write_text("this is not an image\n")
    shutil.copy(media["free-mountain-vector-01.jpg"], d / "mountain.jpg")
    cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    rgba = cv2.cvtColor(face, cv2.COLOR_BGR2BGRA)
    rgba[..., 3] = 128
    cv2.imwrite(str(d / "rgba.png"), rgba)
    cv2.imwrite(str(d / "deep.png"), face.astype(np.uint16) * 257)
    canvas = np.full((5000, 5000, 3), GREY, np.uint8)
    # a ~110-px face in 25 Mpixel: about 4 px in the detector's 192-px view of the whole image
    small = cv2.resize(face, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    canvas[3100 : 3100 + small.shape[0], 1700 : 1700 + small.shape[1]] = small
    cv2.imwrite(str(d / "huge.jpg"), canvas)
    cv2.imwrite(str(d / "tiny.png"), cv2.resize(face, (20, 20), interpolation=cv2.INTER_AREA))
    # the files really are what their names say
    shapes = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in d.glob("*.png")}
    assert shapes["gray.png"].shape == face.shape[:2]
    assert shapes["rgba.png"].shape == (*face.shape[:2], 4)
    assert shapes["deep.png"].dtype == np.uint16 and shapes["deep.png"].max() > 255
    assert shapes["text.png"] is None and shapes["tiny.png"].shape == (20, 20, 3)
    return d


EXPECTED = {
    "corrupt.mp4": "decode_error",
    "truncated.mp4": "decode_error",
    "empty.jpg": "unreadable",
    "text.png": "unreadable",
    "mountain.jpg": "no_face",
    "tiny.png": "too_small",
    "gray.png": "ok",
    "rgba.png": "ok",
    "deep.png": "ok",
    "huge.jpg": "ok",
}


def test_bad_and_unusual_files_each_get_a_status_and_a_reason(odd_inputs, tmp_path):
    items = [SourceItem(odd_inputs / name, 0, "train") for name in sorted(EXPECTED)]
    t0 = time.perf_counter()
    index = prep.prepare_index("odd", items, tmp_path, FS, MaskSpec())
    secs = time.perf_counter() - t0
    assert secs < 30, f"{secs:.1f} s for ten small files and one 5000x5000 image"

    by = _by_source(index.rows)
    assert set(by) == set(EXPECTED)  # every file is in the manifest, none skipped silently
    assert {k: sorted({r["status"] for r in v}) for k, v in by.items()} == {
        k: [v] for k, v in EXPECTED.items()
    }
    single = ("corrupt.mp4", "empty.jpg", "text.png", "mountain.jpg", "tiny.png")
    assert {k: len(by[k]) for k in single} == dict.fromkeys(single, 1)
    for r in index.rows:
        if r["status"] != "ok":
            assert r["source"] in r["reason"], r  # the reason says which file
            assert not r["image"] and not r["landmarks"]
    # a file that cannot be opened at all is one row for the file, with the OpenCV verdict
    assert by["corrupt.mp4"][0]["frame"] == -1 and "could not open" in by["corrupt.mp4"][0]["reason"]
    assert "could not decode" in by["empty.jpg"][0]["reason"]
    assert "min_face_size 48" in by["tiny.png"][0]["reason"] and by["tiny.png"][0]["det_score"]

    # greyscale, RGBA and 16-bit images are read as 8-bit RGB: one full face each
    for name in ("gray.png", "rgba.png", "deep.png", "huge.jpg"):
        (row,) = by[name]
        crop, lms = _load_ok(index, row)
        assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8, name
        assert lms.shape == (NUM_LANDMARKS, 3) and lms.dtype == np.float32
        assert (lms[:, :2] > 0).mean() > 0.95 and (lms[:, :2] < 256).mean() > 0.95, name
        assert float(row["det_score"]) >= FS.min_confidence
    gray, _ = _load_ok(index, by["gray.png"][0])
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    # the small face in the huge canvas is found (by the overlapping tiles, too small for the whole
    # view) where it is: its crop holds face pixels, not the flat background around it
    huge, _ = _load_ok(index, by["huge.jpg"][0])
    assert (huge == GREY).all(-1).mean() < 0.05
    t0 = time.perf_counter()  # the 25-Mpixel image alone (tiled detection): about a second
    rows, _ = prep._pipeline(FS).index(SourceItem(odd_inputs / "huge.jpg", 0, "train"), tmp_path / "x")
    assert [r["status"] for r in rows] == ["ok"] and time.perf_counter() - t0 < 10

    # the manifest on disk says the same (as text: a fresh index holds int frames, the CSV strings),
    # and the unusable files are exactly the bad ones
    as_text = [{k: str(v) for k, v in r.items()} for r in index.rows]
    assert [{k: str(v) for k, v in r.items()} for r in read_manifest(index.manifest)] == as_text
    bad = [it.key for it in unusable_sources(items, index.rows)]
    assert bad == sorted(k for k, v in EXPECTED.items() if v != "ok")


# a subprocess indexes one image and reports its time and the peak memory the indexing added (VmHWM:
# the peak RSS of this process image; ru_maxrss would start from the parent's RSS, exec keeps it)
_MEASURE = """
import json, re, sys, time
from pathlib import Path
from lmguide.data import prepare as prep
from lmguide.data.faces import FaceSettings
from lmguide.data.layouts.base import SourceItem
from lmguide.data.masks import MaskSpec
def peak_mb():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024
item = SourceItem(Path(sys.argv[1]), 0, "train")
before, t0 = peak_mb(), time.perf_counter()
index = prep.prepare_index("big", [item], sys.argv[2], FaceSettings(frames_per_video=2), MaskSpec())
secs, added_mb = time.perf_counter() - t0, peak_mb() - before
print(json.dumps({"rows": index.rows, "root": str(index.root), "secs": secs, "added_mb": added_mb}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak memory from /proc/self/status")
def test_a_10000_px_image_is_indexed_in_bounded_time_and_memory(media, tmp_path):
    side = 10_000
    canvas = np.full((side, side, 3), GREY, np.uint8)
    face = cv2.imread(str(media["single_face.jpg"]))
    canvas[6100 : 6100 + face.shape[0], 3700 : 3700 + face.shape[1]] = face
    cv2.imwrite(str(tmp_path / "giant.jpg"), canvas)
    frame_mb = canvas.nbytes / 2**20  # 286 MiB decoded
    del canvas
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "giant.jpg"), str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    (row,) = got["rows"]
    assert row["status"] == "ok" and row["source"] == "giant.jpg"
    crop = cv2.imread(str(Path(got["root"]) / row["image"]))
    assert crop.shape == (256, 256, 3) and (crop == GREY).all(-1).mean() < 0.05  # the face, found by tiles
    # about 5 s and 680 MB: the decoded frame twice (BGR, RGB) at the peak, whatever the tile count
    assert got["secs"] < 60, got["secs"]
    assert frame_mb < got["added_mb"] < 4 * frame_mb, got["added_mb"]


def _png_header(w: int, h: int) -> bytes:
    """A PNG that says it is ``w`` x ``h`` RGB in about a kilobyte (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (3 * w + 1) * 4)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_an_image_over_the_decoder_limit_is_a_status_not_a_crash(media, tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_header(40_000, 40_000))  # 1.6 Gpixel, 4.8 GB decoded
    items = [
        SourceItem(tmp_path / "bomb.png", 1, "train"),
        SourceItem(media["single_face.jpg"], 0, "train"),
    ]
    index = prep.prepare_index("bomb", items, tmp_path / "cache", FS, MaskSpec())
    bomb, face = _by_source(index.rows)["bomb.png"], _by_source(index.rows)["single_face.jpg"]
    assert [(r["status"], r["frame"], r["image"]) for r in bomb] == [("unreadable", -1, "")]
    reason = bomb[0]["reason"]
    assert reason.startswith(str(tmp_path / "bomb.png")) and "too large to decode" in reason
    assert "OPENCV_IO_MAX_IMAGE_PIXELS" in reason
    assert [r["status"] for r in face] == ["ok"]  # the run went on with the next file


@pytest.fixture(scope="module")
def two_faces(media, tmp_path_factory) -> dict[str, Path]:
    """One frame with two faces, the demo face in colour and a smaller grey copy beside it; as a PNG and
    as a 2-frame clip."""
    d = tmp_path_factory.mktemp("two")
    face = cv2.imread(str(media["single_face.jpg"]))
    small = cv2.resize(face, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    (h, w), (gh, gw) = face.shape[:2], grey.shape[:2]
    frame = np.full((h, w + gw, 3), GREY, np.uint8)
    frame[:, :w] = face
    frame[(h - gh) // 2 : (h - gh) // 2 + gh, w:] = grey
    cv2.imwrite(str(d / "two.png"), frame)
    even = frame[: h - h % 2, : (w + gw) - (w + gw) % 2]
    _reencode([even, even], d / "two.mp4")
    return {"image": d / "two.png", "video": d / "two.mp4"}


def _greyness(crop: np.ndarray) -> float:
    """Mean spread between the colour channels: about 0 for a grey crop."""
    c = crop.astype(np.int16)
    return float(np.abs(c - c.mean(-1, keepdims=True)).mean())


@pytest.mark.parametrize("policy", ["largest", "all"])
def test_a_frame_with_two_faces(policy, two_faces, tmp_path):
    items = [SourceItem(two_faces["image"], 1, "test"), SourceItem(two_faces["video"], 1, "test")]
    fs = FaceSettings(frames_per_video=2, image_faces=policy, video_faces=policy)
    index = prep.prepare_index("two", items, tmp_path, fs, MaskSpec())
    faces = [0] if policy == "largest" else [0, 1]
    frames = [("two.png", 0)] + [("two.mp4", f) for f in (0, 1)]
    assert [(r["source"], r["frame"], r["face"]) for r in index.rows] == [
        (src, f, k) for src, f in frames for k in faces
    ]
    assert {r["status"] for r in index.rows} == {"ok"}
    crops = {}
    for r in index.rows:
        crop, lms = _load_ok(index, r)
        assert crop.shape == (256, 256, 3) and lms.shape == (NUM_LANDMARKS, 3)
        assert (index.mask_dir / f"{r['sample_id']}.png").is_file()
        crops[(r["source"], r["frame"], r["face"])] = crop
    assert len({r["image"] for r in index.rows}) == len({r["landmarks"] for r in index.rows}) == len(crops)
    for src, f in frames:  # one colour crop and, under `all`, one grey: each face its own crop
        grey = sorted(_greyness(crops[(src, f, k)]) < 5 for k in faces)  # grey: ~1, colour: ~24
        assert grey == ([False] if policy == "largest" else [False, True]), (src, f)
    photo = [r["video_id"] for r in index.rows if r["source"] == "two.png"]
    assert photo == [f"two.png#{k}" for k in faces]  # each face of a photo is its own clip
    assert {r["video_id"] for r in index.rows if r["source"] == "two.mp4"} == {"two.mp4"}


def test_a_video_without_a_face_is_recorded_frame_by_frame(media, tmp_path, caplog):
    item = SourceItem(media["no_face.mp4"], 0, "val")
    with caplog.at_level(logging.WARNING, logger="lmguide.data.prepare"):
        index = prep.prepare_index("noface", [item], tmp_path, FaceSettings(frames_per_video=3), MaskSpec())
    # its header claims 98 frames, 97 decode: the last wanted one is a decode_error, the others no_face
    assert [(r["frame"], r["status"]) for r in index.rows] == [
        (0, "no_face"), (48, "no_face"), (97, "decode_error")
    ]  # fmt: skip
    assert index.rows[0]["reason"] == "no face detected in frame 0 of no_face.mp4"
    assert all("no_face.mp4" in r["reason"] and r["image"] == r["landmarks"] == "" for r in index.rows)
    assert index.ok_rows() == [] and unusable_sources([item], index.rows) == [item]
    assert not (index.root / "faces").exists()  # nothing cropped
    assert "1 source file(s) have no usable face: no_face.mp4 (val)" in caplog.text
    assert [(r["frame"], r["status"]) for r in read_manifest(index.manifest)] == [
        (r["frame"], r["status"]) for r in index.rows
    ]


def _files(root: Path) -> dict[str, tuple[str, int]]:
    """sha1 and mtime (ns) of every file under ``root``."""
    return {
        p.relative_to(root).as_posix(): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_bad_files_added_later_leave_the_cached_files_untouched(media, clips, odd_inputs, tmp_path, caplog):
    src, cache = tmp_path / "src", tmp_path / "cache"
    src.mkdir()
    shutil.copy(media["single_face.jpg"], src / "face.jpg")
    (src / "clip.mp4").write_bytes(clips["face"])
    good = [SourceItem(src / "clip.mp4", 0, "train"), SourceItem(src / "face.jpg", 0, "val")]
    first = prep.prepare_index("grow", good, cache, FS, MaskSpec())
    assert len(first.ok_rows()) == 3
    before = _files(cache)

    bad = {"corrupt.mp4": "decode_error", "empty.jpg": "unreadable", "text.png": "unreadable"}
    for name in bad:
        shutil.copy(odd_inputs / name, src / name)
    items = good + [SourceItem(src / name, 1, "train") for name in bad]
    with caplog.at_level(logging.INFO, logger="lmguide.data.prepare"):
        second = prep.prepare_index("grow", items, cache, FS, MaskSpec())
    assert second.root == first.root and "2 of 5 files already indexed" in caplog.text
    after = _files(cache)
    # every file cached before is still there, byte for byte, and was not even rewritten
    assert {k: after.get(k) for k in before} == before
    # new: the three done records, the manifest of the longer list and its "masks complete" marker
    marker = second.mask_dir / f".complete-{second.manifest.stem}"
    written = [second.root / f"done/{name}.json" for name in bad] + [second.manifest, marker]
    assert sorted(set(after) - set(before)) == sorted(p.relative_to(cache).as_posix() for p in written)
    by = _by_source(second.rows)
    assert {name: [r["status"] for r in by[name]] for name in bad} == {k: [v] for k, v in bad.items()}
    assert all(str(src / name) in by[name][0]["reason"] for name in bad)
    assert [r for r in second.rows if r["source"] in ("clip.mp4", "face.jpg")] == first.rows
    # the first manifest still serves the first file list
    assert prep.prepare_index("grow", good, cache, FS, MaskSpec(), read_only=True).rows == first.rows


def test_low_confidence_face_is_recorded_with_its_score(media, clips, tmp_path, monkeypatch):
    calls = []

    def unsure(self, rgb):
        calls.append(rgb.shape)
        h, w = rgb.shape[:2]
        return [Detection((w * 0.3, h * 0.3, w * 0.7, h * 0.7), 0.35)]

    monkeypatch.setattr(FaceDetector, "detect", unsure)
    (tmp_path / "clip.mp4").write_bytes(clips["face"])
    items = [
        SourceItem(media["single_face.jpg"], 1, "val"),
        SourceItem(tmp_path / "clip.mp4", 1, "val"),
    ]
    index = prep.prepare_index("unsure", items, tmp_path / "cache", FS, MaskSpec())
    assert len(calls) == 3  # the image and both sampled frames went through the detector
    assert [(r["source"], r["frame"], r["status"]) for r in index.rows] == [
        ("single_face.jpg", 0, "low_confidence"),
        ("clip.mp4", 0, "low_confidence"),
        ("clip.mp4", 5, "low_confidence"),
    ]
    for r in index.rows:
        assert r["det_score"] == "0.350" and "0.35 < min_confidence 0.5" in r["reason"], r
        assert r["source"] in r["reason"] and r["image"] == "" and r["face"] == -1
    assert index.ok_rows() == [] and len(unusable_sources(items, index.rows)) == 2
    assert "low_confidence" in status_table(index.rows)


@pytest.fixture(scope="module")
def group_faces(media) -> list[Detection]:
    """The faces of multi_face.jpg above min_confidence, straight from the detector."""
    with FaceFinder(FS.detector, FS.low_confidence) as det:
        dets = det.detect(read_image(media["multi_face.jpg"]))
    return [d for d in dets if d.score >= FS.min_confidence]


@pytest.mark.parametrize("policy", ["all", "largest", "best"])
def test_face_policy_on_a_group_photo(policy, media, clips, group_faces, tmp_path):
    largest = max(group_faces, key=lambda d: d.size)
    best = max(group_faces, key=lambda d: d.score)
    assert len(group_faces) >= 3 and largest is not best  # the photo tells the two policies apart
    (tmp_path / "group.mp4").write_bytes(clips["group"])
    items = [
        SourceItem(media["multi_face.jpg"], 0, "train"),
        SourceItem(tmp_path / "group.mp4", 0, "train"),
    ]
    # the image follows image_faces; the video (the same photo twice) follows video_faces
    other = "all" if policy != "all" else "largest"
    fs = FaceSettings(frames_per_video=2, image_faces=policy, video_faces=other)
    index = prep.prepare_index("group", items, tmp_path / "cache", fs, MaskSpec())
    photo = [r for r in index.rows if r["source"] == "multi_face.jpg"]
    clip = [r for r in index.rows if r["source"] == "group.mp4"]
    assert all(r["status"] == "ok" for r in photo + clip)
    scores = [r["det_score"] for r in photo]
    if policy == "all":
        assert sorted(scores) == sorted(f"{d.score:.3f}" for d in group_faces)
        assert [r["face"] for r in photo] == list(range(len(group_faces)))
        # each face of a still photo is its own clip
        assert len({r["video_id"] for r in photo}) == len(photo)
        assert len(clip) == 2 and {r["face"] for r in clip} == {0}  # video: the largest face per frame
    else:
        want = largest if policy == "largest" else best
        assert scores == [f"{want.score:.3f}"] and photo[0]["face"] == 0
        assert len(clip) > 2 and {r["frame"] for r in clip} == {0, 1}  # video: every face per frame
        assert {r["video_id"] for r in clip} == {"group.mp4"}


# --------------------------------------------------------------------------- layouts end to end


def _ffpp_tree(root: Path, clips: dict[str, bytes]) -> Path:
    files = {
        "original_sequences/youtube/c23/videos/000.mp4": "face",
        "original_sequences/youtube/c23/videos/003.mp4": "face",
        "original_sequences/youtube/c23/videos/071.mp4": "noface",
        "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4": "face",
        "manipulated_sequences/Face2Face/c23/videos/000_003.mp4": "face",
    }
    for rel, clip in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(clips[clip])
    splits = root.parent / "splits"
    splits.mkdir()
    for name, pairs in {"train": [["000", "003"]], "val": [["071", "054"]], "test": [["999", "998"]]}.items():
        (splits / f"{name}.json").write_text(json.dumps(pairs))
    return splits


def test_ffpp_tree_through_the_prepare_cli(clips, cache_dir, tmp_path):
    root = tmp_path / "ff"
    splits = _ffpp_tree(root, clips)
    args = [
        "data=ffpp",
        f"data.root={root}",
        f"data.source.split_dir={splits}",
        "data.source.manipulations=[Deepfakes,Face2Face]",
        "data.faces.frames_per_video=2",
        "data.prepare_workers=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = run_cli("lmguide.prepare", args, tmp_path, cache_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "lmguide prepare: ffpp: 5 files (5 videos, 0 images)" in out
    assert (
        "10 rows (no_face=2, ok=8); usable faces: train 8 (4 real, 4 fake), val 0 (0 real, 0 fake), "
        "test 0 (0 real, 0 fake)"
    ) in out
    assert "no usable face: original_sequences/youtube/c23/videos/071.mp4 (val, label 0): no_face" in out
    manifest = Path(next(ln for ln in out.splitlines() if ln.startswith("manifest: "))[len("manifest: ") :])
    assert manifest.is_file() and manifest.is_relative_to(cache_dir / "ffpp")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    clips_of = {r["video_id"]: (r["label"], r["split"]) for r in rows}
    assert clips_of == {
        "youtube/000": ("0", "train"),
        "youtube/003": ("0", "train"),
        "youtube/071": ("0", "val"),
        "Deepfakes/000_003": ("1", "train"),
        "Face2Face/000_003": ("1", "train"),
    }
    # the two fakes of the same pair are two clips with their own cached crops
    fakes = [r for r in rows if r["label"] == "1"]
    assert len(fakes) == 4 and len({r["image"] for r in fakes}) == 4
    folders = {r["sample_id"].split("/")[1] for r in fakes}
    assert folders == {"Deepfakes", "Face2Face"} and all(r["sample_id"].startswith("manip") for r in fakes)


@pytest.fixture(scope="module")
def folder_dm(media, clips, cache_dir, tmp_path_factory):
    """A real/fake folder tree with split folders, prepared and set up through FaceDataModule."""
    root = tmp_path_factory.mktemp("folder_tree")
    face = cv2.imread(str(media["single_face.jpg"]))
    files = {
        "train/real/face.jpg": face,
        "train/real/group.jpg": cv2.imread(str(media["multi_face.jpg"])),
        "train/fake/flipped.png": face[:, ::-1],
        "train/fake/mountain.jpg": cv2.imread(str(media["free-mountain-vector-01.jpg"])),
        "val/real/gray.png": cv2.cvtColor(face, cv2.COLOR_BGR2GRAY),
        "val/fake/dark.png": (face * 0.6).astype(np.uint8),
        "test/real/deep.png": face.astype(np.uint16) * 257,
    }
    for rel, img in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), img)
    (root / "test/fake").mkdir()
    (root / "test/fake/clip.mp4").write_bytes(clips["face"])
    overrides = [
        "data=folder",
        f"data.root={root}",
        "data.faces.frames_per_video=2",
        "data.num_workers=0",
        "data.prepare_workers=1",
        "data.batch_size=2",
    ]
    cfg = compose_cfg(overrides, tmp_path_factory.mktemp("out"), cache_dir)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_folder_tree_is_ready_to_train(folder_dm):
    dm = folder_dm
    assert dm.fakes is None  # data=folder turns self-blending off: the fakes are the fake/ files
    rows = dm.index.rows
    n_group = sum(r["source"] == "train/real/group.jpg" for r in rows)
    assert n_group >= 3 and all(r["status"] == "ok" for r in rows if r["source"] == "train/real/group.jpg")
    expect = {"train": (1 + n_group, 1), "val": (1, 1), "test": (1, 2)}  # (real faces, fake faces)
    for split, (real, fake) in expect.items():
        ds = dm.datasets[split]
        assert len(ds) == len(dm.index.ok_rows(split)) == real + fake, split
        assert sorted(ds.labels) == [0] * real + [1] * fake, split
        assert not any(v.startswith("sbi:") for v in ds.video_names)
        item = ds[0]
        assert item["image"].shape == (3, dm.image_size, dm.image_size) and item["mask"].max() > 0
    (bad,) = unusable_sources(dm.source.items(), rows)
    assert (bad.key, bad.label) == ("train/fake/mountain.jpg", 1)
    assert dm.class_weights().shape == (2,)


def test_new_mask_radius_on_a_layout_redraws_without_mediapipe(folder_dm, monkeypatch):
    dm = folder_dm
    monkeypatch.setattr(prep, "FramePipeline", lambda *a, **k: pytest.fail("MediaPipe ran again"))
    monkeypatch.setattr(prep, "_PIPELINE", None)  # no graph left over from an earlier test either
    wide = MaskSpec(regions=dm.mask.regions, radius=2 * dm.mask.radius, soft=dm.mask.soft)
    again = prep.prepare_index(dm.source.name, dm.source.items(), dm.cache_dir, dm.faces, wide)
    assert again.root == dm.index.root and again.mask_dir != dm.index.mask_dir
    assert again.rows == dm.index.rows
    ok = dm.index.ok_rows()
    drawn = [p.relative_to(again.mask_dir).as_posix() for p in again.mask_dir.rglob("*.png") if p.is_file()]
    assert sorted(drawn) == sorted(f"{r['sample_id']}.png" for r in ok)
    sid = ok[0]["sample_id"]
    narrow_px = (cv2.imread(str(dm.index.mask_dir / f"{sid}.png"), cv2.IMREAD_GRAYSCALE) > 127).sum()
    wide_px = (cv2.imread(str(again.mask_dir / f"{sid}.png"), cv2.IMREAD_GRAYSCALE) > 127).sum()
    assert wide_px > 2 * narrow_px > 0  # twice the radius: a much larger drawn area


# --------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize(
    "args,needle",
    [
        (["data=folder", "data.root=/nonexistent/lmguide-data"], "/nonexistent/lmguide-data is not a folder"),
        (["data=ffpp"], "data.root is not set"),
    ],
)
def test_prepare_cli_refuses_a_missing_root(args, needle, cache_dir, tmp_path):
    proc = run_cli("lmguide.prepare", [*args, f"hydra.run.dir={tmp_path}"], tmp_path, cache_dir, timeout=120)
    assert proc.returncode != 0
    assert needle in proc.stderr, proc.stderr[-2000:]
    assert "manifest:" not in proc.stdout and "Traceback" not in proc.stdout


# --------------------------------------------------------------------------- parallel workers


def test_two_workers_build_the_same_cache_as_one(media, clips, tmp_path, caplog):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(media["single_face.jpg"], src / "face.jpg")
    shutil.copy(media["free-mountain-vector-01.jpg"], src / "mountain.jpg")
    shutil.copy(media["multi_face.jpg"], src / "group.jpg")
    (src / "clip.mp4").write_bytes(clips["face"])
    splits = ["train", "val", "test", "train"]
    paths = sorted(src.iterdir())
    items = [SourceItem(p, i % 2, s) for i, (p, s) in enumerate(zip(paths, splits, strict=True))]

    built = {}
    for workers in (1, 2):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lmguide.data.prepare"):
            index = prep.prepare_index(
                "par", items, tmp_path / f"cache{workers}", FS, MaskSpec(), workers=workers
            )
        assert f"{workers} worker{'s' * (workers > 1)})" in caplog.text
        base = tmp_path / f"cache{workers}"
        files = {p.relative_to(base): p.read_bytes() for p in base.rglob("*") if p.is_file()}
        built[workers] = (index, files)
    (one, files1), (two, files2) = built[1], built[2]
    assert one.manifest.relative_to(tmp_path / "cache1") == two.manifest.relative_to(tmp_path / "cache2")
    assert one.manifest.read_bytes() == two.manifest.read_bytes()
    assert len(one.ok_rows()) >= 6 and {r["status"] for r in one.rows} == {"ok", "no_face"}
    # not only the manifest: every crop, landmark file, mask and done record is byte-identical
    assert sorted(files1) == sorted(files2)
    assert [k for k in files1 if files1[k] != files2[k]] == []
