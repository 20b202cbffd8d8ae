"""Build the cached index: face crops, 478 landmarks (.npy), region masks (.png) and a manifest.

Layout under ``<cache_dir>/<dataset>/index/<crop_key>/``::

    faces/<key>/f<frame>_k<face>.png      face crop (RGB saved as PNG, lossless)
    landmarks/<key>/f<frame>_k<face>.npy  (478, 3) float32, pixel coordinates of the crop
    done/<key>.json                       the rows of one finished source file (the resume record)
    manifests/<items_key>.csv             one row per frame/face: video id, label, split, status, reason
    masks/<mask_key>/<sample_id>.png      region mask, uint8 0..255

``key`` is a source file's path inside its data set. ``crop_key`` hashes everything that changes
crops or landmarks (face settings, frame sampling, landmarker version, data root); ``items_key`` the
list of files with their labels and splits, so a new split re-uses every crop; ``mask_key`` the
MaskSpec, so a new mask radius re-draws masks from cached landmarks without running MediaPipe again.

Every file is written atomically (temp file + rename) and a source file counts as done only once its
``done/<key>.json`` exists, so a run killed at any moment resumes with exactly the missing files, and
two runs on the same data set (sweep jobs) can share the cache. The MediaPipe pass runs in a pool of
worker processes (one graph each) and can be sharded across ranks (``RANK``/``WORLD_SIZE`` or
``SLURM_PROCID``/``SLURM_NTASKS``): each shard indexes its files, the shard that completes the set
writes the manifest.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lmguide.data.cache import atomic_imwrite, atomic_save_npy, atomic_write_text, config_hash
from lmguide.data.landmarks import landmarker_version
from lmguide.data.layouts.base import SPLITS, SourceItem
from lmguide.data.masks import MaskSpec, draw_mask
from lmguide.data.media import MediaError, VideoFrames, read_image
from lmguide.errors import LmguideError

log = logging.getLogger(__name__)

MANIFEST_FIELDS = [
    "sample_id",
    "source",
    "frame",
    "face",
    "video_id",
    "person",
    "label",
    "split",
    "status",
    "reason",
    "image",
    "landmarks",
    "det_score",
    "origin",
]
#: what a manifest row's status means
STATUSES = {
    "ok": "face cropped, 478 landmarks and a mask cached",
    "no_face": "the detector found no face in the frame",
    "low_confidence": "a face below data.faces.min_confidence (recorded, not cropped)",
    "too_small": "a face smaller than data.faces.min_face_size pixels",
    "no_landmarks": "FaceMesh found no face in the detector's crop",
    "decode_error": "the video or one of its frames could not be decoded",
    "unreadable": "the image file could not be read",
}
#: bumped whenever the index format (file naming, manifest columns) changes: part of the crop key
INDEX_VERSION = 4
_ROW_FIELDS = ("sample_id", "frame", "face", "status", "reason", "image", "landmarks", "det_score")


@dataclass
class FaceSettings:
    """How frames are sampled and faces found and cropped (all part of the crop cache key)."""

    face_size: int = 256
    face_scale: float = 1.3
    crop: str = "scaled"  # scaled: side = face_scale * box side; tight: the detector box itself
    # full (full-range model, short-range when it finds nothing), short, both (best of the two) or
    # none (the input is already a face crop: FaceMesh runs on the whole frame)
    detector: str = "full"
    model_selection: int | None = None  # older configs: 1 = detector full, 0 = short
    min_confidence: float = 0.5
    low_confidence: float = 0.2  # detections in [low_confidence, min_confidence) → status low_confidence
    min_face_size: int = 48  # pixels in the source frame; smaller detections are recorded, not cropped
    frames_per_video: int = 32
    frames_every: int | None = None  # every k-th frame instead of frames_per_video evenly spaced
    video_faces: str = "largest"  # which faces a video frame keeps: largest, best (score) or all
    image_faces: str = "all"  # the same for a still image

    def __post_init__(self) -> None:
        if self.face_size < 32:
            raise ValueError(f"data.faces.face_size must be >= 32, got {self.face_size}")
        if not self.face_scale > 0:
            raise ValueError(f"data.faces.face_scale must be > 0, got {self.face_scale}")
        if self.model_selection is not None:  # the older key, still accepted (and in checkpoints)
            if self.model_selection not in (0, 1):
                raise ValueError(f"data.faces.model_selection must be 0 or 1, got {self.model_selection}")
            if self.detector == "full":
                self.detector = "full" if self.model_selection == 1 else "short"
            self.model_selection = None
        from lmguide.data.faces import DETECTORS

        if self.detector not in DETECTORS:
            raise ValueError(
                f"data.faces.detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}"
            )
        if self.crop not in ("scaled", "tight"):
            raise ValueError(f"data.faces.crop must be 'scaled' or 'tight', got {self.crop!r}")
        if self.frames_per_video < 1:
            raise ValueError(f"data.faces.frames_per_video must be >= 1, got {self.frames_per_video}")
        if self.frames_every is not None and self.frames_every < 1:
            raise ValueError(f"data.faces.frames_every must be null or >= 1, got {self.frames_every}")
        if not 0.0 < self.min_confidence < 1.0:
            raise ValueError(f"data.faces.min_confidence must be in (0, 1), got {self.min_confidence}")
        if not 0.0 < self.low_confidence <= self.min_confidence:
            raise ValueError(
                f"data.faces.low_confidence must be in (0, min_confidence={self.min_confidence}], "
                f"got {self.low_confidence}"
            )
        for k in ("video_faces", "image_faces"):
            if getattr(self, k) not in ("largest", "best", "all"):
                raise ValueError(f"data.faces.{k} must be largest, best or all, got {getattr(self, k)!r}")

    @property
    def crop_scale(self) -> float:
        return 1.0 if self.crop == "tight" or self.detector == "none" else self.face_scale


def face_settings(node) -> FaceSettings:
    """FaceSettings from a config node (``data.faces`` of a run, ``_target_`` ignored); keys a config
    written by an older version lacks take their defaults."""
    return FaceSettings(**{k: v for k, v in dict(node).items() if not k.startswith("_")})


_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}


class CacheWriteError(LmguideError, RuntimeError):
    """The landmark cache could not be written (unwritable folder, full disk)."""


@contextmanager
def cache_errors(cache_dir: str | Path):
    """Turn an OS error while fetching or writing into ``cache_dir`` into one message that names the
    folder, the cause and the fix. Writes are atomic and per file: what was cached stays, and the next
    run resumes from it."""
    try:
        yield
    except OSError as err:
        if err.errno not in _WRITE_ERRNOS:  # e.g. a network error fetching the demo: its own message
            raise
        cause = err.strerror or str(err)
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        raise CacheWriteError(
            f"cannot write the landmark cache under {cache_dir}: {cause}{where}. Files cached so far are "
            "kept and a re-run resumes from them; free space or set paths.cache_dir (LMGUIDE_CACHE_DIR) "
            "to a writable folder"
        ) from err


@dataclass
class PreparedIndex:
    """What ``setup`` reads: the manifest rows and where the files are."""

    root: Path
    mask_dir: Path
    rows: list[dict] = field(default_factory=list)
    manifest: Path | None = None

    def ok_rows(self, split: str | None = None) -> list[dict]:
        return [r for r in self.rows if r["status"] == "ok" and (split is None or r["split"] == split)]


# ---------------------------------------------------------------------------------------------------
# one source file → rows (runs inside a worker process)


def _read_frames(item: SourceItem, fs: FaceSettings) -> Iterator[tuple[int, np.ndarray | None]]:
    """Yield ``(frame_index, rgb)`` for an image (index 0) or the sampled frames of a video.

    A wanted frame the decoder cannot deliver (a truncated video, a wrong frame count in the
    header) is yielded as ``(frame_index, None)`` so it is recorded, not dropped. A file that
    cannot be opened at all raises MediaError.
    """
    if not item.is_video:
        yield 0, read_image(item.path)
        return
    n = None if fs.frames_every else fs.frames_per_video
    yield from VideoFrames(item.path, n, fs.frames_every, threads=1)


def select_faces(dets: list, policy: str) -> list:
    """The detections a frame keeps under ``policy`` (largest, best or all)."""
    if policy == "largest":
        return sorted(dets, key=lambda d: -d.size)[:1]
    if policy == "best":
        return sorted(dets, key=lambda d: -d.score)[:1]
    return dets


class FramePipeline:
    """Detector + FaceMesh for one process: turns a source file into manifest rows and cached files."""

    def __init__(self, fs: FaceSettings):
        from lmguide.data.faces import FaceFinder
        from lmguide.data.landmarks import FaceMeshLandmarker

        self.fs = fs
        self.det = FaceFinder(fs.detector, fs.low_confidence)
        self.mesh = FaceMeshLandmarker()

    def close(self) -> None:
        self.det.close()
        self.mesh.close()

    def index(self, item: SourceItem, out: Path) -> tuple[list[dict], int]:
        """Rows of ``item`` (files written under ``out``) and the number of frames decoded."""
        from lmguide.data.faces import crop_face

        fs, key, name = self.fs, item.key, item.path.name
        rows: list[dict] = []

        def frame_row(fidx: int, status: str, reason: str, **extra) -> None:
            sid = f"{key}/file" if fidx < 0 else f"{key}/f{fidx:05d}"
            rows.append(
                {"sample_id": sid, "frame": fidx, "face": -1, "status": status, "reason": reason, **extra}
            )

        policy = fs.video_faces if item.is_video else fs.image_faces
        n_frames = 0
        try:
            for fidx, rgb in _read_frames(item, fs):
                if rgb is None:
                    frame_row(fidx, "decode_error", f"frame {fidx} of {name} could not be decoded")
                    continue
                n_frames += 1
                dets = self.det.detect(rgb)
                sure = [d for d in dets if d.score >= fs.min_confidence]
                if not sure:
                    if dets:
                        best = max(dets, key=lambda d: d.score)
                        reason = (
                            f"best face score {best.score:.2f} < min_confidence {fs.min_confidence} "
                            f"in frame {fidx} of {name}"
                        )
                        frame_row(fidx, "low_confidence", reason, det_score=f"{best.score:.3f}")
                    else:
                        frame_row(fidx, "no_face", f"no face detected in frame {fidx} of {name}")
                    continue
                for k, d in enumerate(select_faces(sure, policy)):
                    sid = f"{key}/f{fidx:05d}_k{k:02d}"
                    row = {"sample_id": sid, "frame": fidx, "face": k, "det_score": f"{d.score:.3f}"}
                    if d.size < fs.min_face_size:
                        reason = (
                            f"face of {d.size:.0f}px < min_face_size {fs.min_face_size} "
                            f"in frame {fidx} of {name}"
                        )
                        rows.append({**row, "status": "too_small", "reason": reason})
                        continue
                    crop = crop_face(rgb, d.box, fs.crop_scale, fs.face_size)
                    lms = self.mesh(crop)
                    if lms is None:
                        reason = f"{STATUSES['no_landmarks']} (face {k} in frame {fidx} of {name})"
                        rows.append({**row, "status": "no_landmarks", "reason": reason})
                        continue
                    img_rel, lm_rel = f"faces/{sid}.png", f"landmarks/{sid}.npy"
                    atomic_imwrite(out / img_rel, cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
                    atomic_save_npy(out / lm_rel, lms)
                    rows.append({**row, "status": "ok", "reason": "", "image": img_rel, "landmarks": lm_rel})
        except MediaError as err:
            # the file itself is refused (cannot be opened, no frame at all): one row for the file
            status = "decode_error" if item.is_video else "unreadable"
            rows = [r for r in rows if r["status"] != "ok"]  # nothing half-indexed is kept
            frame_row(-1, status, f"{item.path}: {err}")
        return rows, n_frames


def _done_path(work: Path, key: str) -> Path:
    return work / "done" / f"{key}.json"


def _is_done(work: Path, item: SourceItem) -> bool:
    """A source counts as done when its record exists and was made from a file of the same size."""
    path = _done_path(work, item.key)
    if not path.exists():
        return False
    try:
        rec = json.loads(path.read_text())
        return rec.get("size") == item.path.stat().st_size
    except (OSError, ValueError):
        return False  # unreadable record or missing file: index it again (and report then)


def _remove_stale_temps(work: Path, key: str, older_than: float = 600.0) -> int:
    """Delete temp files (``.<name>.<random>``) a killed run left in the folders of source ``key``.

    Only files older than ``older_than`` seconds: a younger one may belong to a concurrent run that is
    writing it right now. Temp files are never read, so leaving a young one is harmless.
    """
    now, n = time.time(), 0
    for folder in (work / "faces" / key, work / "landmarks" / key, _done_path(work, key).parent):
        if not folder.is_dir():
            continue
        for p in folder.glob(".*"):
            try:
                if p.is_file() and now - p.stat().st_mtime > older_than:
                    p.unlink()
                    n += 1
            except OSError:
                pass  # removed by a concurrent run
    return n


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# one FramePipeline per worker process, built on first use (MediaPipe graphs never cross a fork)
_PIPELINE: tuple[dict, FramePipeline] | None = None


def _pipeline(fs: FaceSettings) -> FramePipeline:
    global _PIPELINE
    if _PIPELINE is None or _PIPELINE[0] != asdict(fs):
        if _PIPELINE is not None:
            _PIPELINE[1].close()
        _PIPELINE = (asdict(fs), FramePipeline(fs))
    return _PIPELINE[1]


def _index_task(task: tuple[SourceItem, str, FaceSettings]) -> tuple[str, int, int, dict]:
    """Index one source and write its done record; returns (key, frames decoded, rows, statuses)."""
    item, work, fs = task
    _remove_stale_temps(Path(work), item.key)
    rows, n_frames = _pipeline(fs).index(item, Path(work))
    rec = {"source": item.key, "size": _file_size(item.path), "frames": n_frames, "rows": rows}
    atomic_write_text(_done_path(Path(work), item.key), json.dumps(rec, sort_keys=True) + "\n")
    return item.key, n_frames, len(rows), dict(Counter(r["status"] for r in rows))


def _mask_task(task: tuple[list[tuple[str, str]], str, str, MaskSpec, int]) -> int:
    """Draw the masks of a chunk of ``(sample_id, landmarks path)`` that are not there yet."""
    chunk, work, mask_dir, spec, size = task
    n = 0
    for sid, lm_rel in chunk:
        target = Path(mask_dir) / f"{sid}.png"
        if target.exists():  # written atomically, so an existing file is a complete one
            continue
        lms = np.load(Path(work) / lm_rel, allow_pickle=False)
        m = draw_mask(lms, (size, size), spec)
        atomic_imwrite(target, np.round(m * 255).astype(np.uint8))
        n += 1
    return n


# ---------------------------------------------------------------------------------------------------
# the pool, progress and shards


def shard_from_env() -> tuple[int, int]:
    """``(rank, world_size)`` of this process under torchrun/DDP or SLURM; ``(0, 1)`` otherwise."""
    for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in os.environ and world_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[world_var])
    return 0, 1


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Workers:
    """Runs tasks in this process (1 worker) or in one spawn pool, started on first use and kept for
    both passes (landmarks, then masks): starting a worker (imports, MediaPipe graphs) costs seconds."""

    def __init__(self, n: int):
        self.n, self._pool = n, None

    def map(self, fn: Callable, tasks: list) -> Iterator:
        """``fn`` over ``tasks``; results in the order they finish."""
        if self.n <= 1 or len(tasks) <= 1:
            yield from map(fn, tasks)
            return
        if self._pool is None:
            # spawn, not fork: the parent may hold torch/OpenMP threads or MediaPipe graphs a fork breaks
            self._pool = mp.get_context("spawn").Pool(self.n)
        yield from self._pool.imap_unordered(fn, tasks, chunksize=1)

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._pool is not None:
            if exc_type is None:
                self._pool.close()
            else:
                self._pool.terminate()
            self._pool.join()


class _Progress:
    """A rich progress bar (files, frames/s, ETA) on a terminal; a log line every 10 % otherwise."""

    def __init__(self, total: int, what: str, enabled: bool = True):
        self.total, self.what, self.done, self.frames = total, what, 0, 0
        self.t0 = time.perf_counter()
        self._next_log = 0.1
        self._bar = None
        if enabled and sys.stderr.isatty() and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[frames]} frames, {task.fields[fps]:.1f} frames/s"),
                TimeRemainingColumn(),
            )
            self._task = self._bar.add_task(what, total=total, frames=0, fps=0.0)
            self._bar.start()

    @property
    def fps(self) -> float:
        return self.frames / max(time.perf_counter() - self.t0, 1e-9)

    def advance(self, frames: int) -> None:
        self.done += 1
        self.frames += frames
        if self._bar is not None:
            self._bar.update(self._task, advance=1, frames=self.frames, fps=self.fps)
        elif self.done / self.total >= self._next_log or self.done == self.total:
            self._next_log = (int(10 * self.done / self.total) + 1) / 10
            left = (self.total - self.done) * (time.perf_counter() - self.t0) / self.done
            log.info(
                "%s: %d/%d files, %d frames, %.1f frames/s, ETA %.0f s",
                self.what, self.done, self.total, self.frames, self.fps, left,
            )  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# ---------------------------------------------------------------------------------------------------
# manifest


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
    for r in rows:  # the same types as freshly assembled rows
        for k in ("label", "frame", "face"):
            r[k] = int(r[k])
        if not r.get("person"):  # a manifest written before the column existed: a clip is a person
            r["person"] = r["video_id"]
    return rows


def _assemble(items: list[SourceItem], work: Path) -> list[dict] | None:
    """The manifest rows in item order (labels, splits, clip ids joined), or None if a source is missing."""
    rows: list[dict] = []
    for item in items:
        try:
            rec = json.loads(_done_path(work, item.key).read_text())
        except (OSError, ValueError):
            return None
        for r in rec["rows"]:
            vid = item.video_id
            if vid is None:  # a video is one clip; each face of a still photo is its own "clip"
                vid = item.key if item.is_video or r["face"] < 0 else f"{item.key}#{r['face']}"
            person = item.person if item.person is not None else vid
            rows.append(
                {**{k: r.get(k, "") for k in _ROW_FIELDS}, "source": item.key, "video_id": vid}
                | {"label": item.label, "split": item.split, "person": person, "origin": item.origin}
            )
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


def status_table(rows: list[dict]) -> str:
    """Rows per status and label, as a small fixed-width table (the prepare summary)."""
    counts = Counter((r["status"], r["label"]) for r in rows)
    statuses = [s for s in STATUSES if any(counts[(s, lab)] for lab in (0, 1))]
    lines = [f"{'status':<15}{'real':>8}{'fake':>8}  meaning"]
    for s in statuses:
        lines.append(f"{s:<15}{counts[(s, 0)]:>8}{counts[(s, 1)]:>8}  {STATUSES[s]}")
    total = Counter(r["label"] for r in rows)
    lines.append(f"{'all':<15}{total[0]:>8}{total[1]:>8}")
    return "\n".join(lines)


def unusable_sources(items: Iterable[SourceItem], rows: list[dict]) -> list[SourceItem]:
    """Source files (videos or images) without a single usable face."""
    usable = {r["source"] for r in rows if r["status"] == "ok"}
    return [i for i in items if i.key not in usable]


# ---------------------------------------------------------------------------------------------------
# the entry point


def _keys(name: str, items: list[SourceItem], faces: FaceSettings) -> tuple[str, str]:
    keys = Counter(i.key for i in items)
    clash = sorted(k for k, c in keys.items() if c > 1)
    if clash:
        raise ValueError(
            f"{name}: several source files share the key(s) {clash[:5]}; sample ids derive from the "
            "path inside the data set, so give them distinct paths or index them as separate data sets"
        )
    roots = sorted({str(i.path)[: -len(i.key)] if str(i.path).endswith(i.key) else str(i.path.parent)
                    for i in items})  # fmt: skip
    crop_key = config_hash(
        {"version": INDEX_VERSION, "faces": asdict(faces), "landmarker": landmarker_version(), "roots": roots}
    )
    items_key = config_hash(
        [(i.key, i.label, i.split, i.video_id) + ((i.person, i.origin) if i.person or i.origin else ())
         for i in items]
    )  # fmt: skip
    return crop_key, items_key


def prepare_index(
    name: str,
    items: list[SourceItem],
    cache_dir: str | Path,
    faces: FaceSettings,
    mask: MaskSpec,
    read_only: bool = False,
    workers: int | None = 1,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> PreparedIndex | None:
    """Index ``items`` into the cache (resuming or reusing what is there) and return the manifest.

    With ``read_only`` (``setup``) nothing is written: a cache that is not complete is an error.
    ``workers``: processes for the MediaPipe pass (None: one per core). ``shard=(rank, world)``
    indexes only every ``world``-th file; the shard that finds every file done writes the manifest,
    the others return None.
    """
    crop_key, items_key = _keys(name, items, faces)
    work = Path(cache_dir).expanduser() / name / "index" / crop_key
    manifest = work / "manifests" / f"{items_key}.csv"
    mask_dir = work / "masks" / mask.key(landmarker_version())
    marker = mask_dir / f".complete-{items_key}"
    if read_only:
        if not (manifest.exists() and marker.exists()):
            raise FileNotFoundError(
                f"the landmark cache {work} is not complete for this data set: run "
                f"`python -m lmguide.prepare data=<layout>` or `python -m lmguide.train` "
                "(prepare_data builds it) before reading it"
            )
        return PreparedIndex(root=work, mask_dir=mask_dir, rows=read_manifest(manifest), manifest=manifest)

    workers = default_workers() if workers is None else max(1, int(workers))
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard rank {rank} is not in [0, {world})")
    with _Workers(workers) as pool:
        if manifest.exists():
            rows = read_manifest(manifest)
            log.info("landmark cache reused: %s\n%s", manifest, status_table(rows))
        else:
            rows = _index_missing(name, items, work, faces, pool, shard, progress)
            if rows is None:
                return None
            _write_manifest(manifest, rows)
            log.info("landmark cache written: %s\n%s", manifest, status_table(rows))
        bad = unusable_sources(items, rows)
        if bad:
            names = ", ".join(f"{i.key} ({i.split})" for i in bad[:20]) + (" …" if len(bad) > 20 else "")
            log.warning("%d source file(s) have no usable face: %s; see %s", len(bad), names, manifest)
        if marker.exists():
            log.info("region masks reused: %s", mask_dir)
        else:
            _draw_masks(rows, work, mask_dir, mask, faces.face_size, pool)
            atomic_write_text(marker, f"{asdict(mask)}\n")
    return PreparedIndex(root=work, mask_dir=mask_dir, rows=rows, manifest=manifest)


def _index_missing(
    name: str,
    items: list[SourceItem],
    work: Path,
    faces: FaceSettings,
    pool: _Workers,
    shard: tuple[int, int],
    progress: bool,
) -> list[dict] | None:
    """Index this shard's sources that have no done record; the manifest rows once all are done."""
    rank, world = shard
    mine = [it for i, it in enumerate(items) if i % world == rank]
    todo = [it for it in mine if not _is_done(work, it)]
    what = f"landmarks {name}" + (f" [shard {rank}/{world}]" if world > 1 else "")
    if len(todo) < len(mine):
        log.info("resuming %s: %d of %d files already indexed", work, len(mine) - len(todo), len(mine))
    if todo:
        log.info(
            "indexing %d files into %s (MediaPipe face detection + FaceMesh 478 points, %d worker%s)",
            len(todo), work, pool.n, "s" * (pool.n > 1),
        )  # fmt: skip
        bar = _Progress(len(todo), what, enabled=progress)
        try:
            # biggest files first, so no worker is left alone with a long video at the end (the
            # manifest keeps the item order whatever order the files finish in)
            order = sorted(todo, key=lambda it: -(_file_size(it.path) or 0))
            for _key, n_frames, _n_rows, _st in pool.map(
                _index_task, [(it, str(work), faces) for it in order]
            ):
                bar.advance(n_frames)
        finally:
            bar.close()
        secs = time.perf_counter() - bar.t0
        log.info("%s: %d frames in %.1f s (%.1f frames/s)", what, bar.frames, secs, bar.fps)
    rows = _assemble(items, work)
    if rows is None:
        log.info("%s done; the manifest is written by the shard that completes the set", what)
    return rows


def _draw_masks(
    rows: list[dict], work: Path, mask_dir: Path, mask: MaskSpec, size: int, pool: _Workers
) -> None:
    ok = [(r["sample_id"], r["landmarks"]) for r in rows if r["status"] == "ok"]
    n_chunks = max(1, min(len(ok) // 32, 8 * pool.n))
    chunks = [ok[i::n_chunks] for i in range(n_chunks)]
    tasks = [(c, str(work), str(mask_dir), mask, size) for c in chunks if c]
    drawn = sum(pool.map(_mask_task, tasks))
    log.info(
        "region masks: %d drawn, %d reused in %s (regions %s, radius %s, soft %s)",
        drawn, len(ok) - drawn, mask_dir, ",".join(mask.regions), mask.radius, mask.soft,
    )  # fmt: skip


def __getattr__(name: str):
    # DemoSource moved to lmguide.data.layouts.demo; checkpoints written before still name it here
    if name == "DemoSource":
        from lmguide.data.layouts.demo import DemoSource

        return DemoSource
    raise AttributeError(name)
