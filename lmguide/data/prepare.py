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

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from lmguide.data.cache import (
    atomic_imwrite,
    atomic_save_npy,
    atomic_write_text,
    config_hash,
    done_path,
    file_size,
    is_done,
    remove_stale_temps,
)
from lmguide.data.faces import FacePipeline, FaceSettings
from lmguide.data.landmarks import landmarker_version
from lmguide.data.layouts.base import SourceItem
from lmguide.data.manifest import (
    ROW_FIELDS,
    STATUSES,
    PreparedIndex,
    read_manifest,
    row_person,
    status_table,
    unusable_sources,
    write_manifest,
)
from lmguide.data.masks import MaskSpec, draw_mask
from lmguide.data.media import MediaError, VideoFrames, read_image
from lmguide.data.workers import Progress, Workers, default_workers

log = logging.getLogger(__name__)

#: bumped whenever the index format (file naming, manifest columns) changes: part of the crop key
INDEX_VERSION = 4


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


class FramePipeline:
    """Face pipeline + FaceMesh for one process: turns a source file into manifest rows and cached files."""

    def __init__(self, fs: FaceSettings):
        from lmguide.data.landmarks import FaceMeshLandmarker

        self.fs = fs
        self.faces = FacePipeline(fs, record_low=True)
        self.mesh = FaceMeshLandmarker()

    def close(self) -> None:
        self.faces.close()
        self.mesh.close()

    def index(self, item: SourceItem, out: Path) -> tuple[list[dict], int]:
        """Rows of ``item`` (files written under ``out``) and the number of frames decoded."""
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
                found = self.faces(rgb, policy)
                best = found.best_below
                if best is not None:
                    reason = (
                        f"best face score {best.score:.2f} < min_confidence {fs.min_confidence} "
                        f"in frame {fidx} of {name}"
                    )
                    frame_row(fidx, "low_confidence", reason, det_score=f"{best.score:.3f}")
                elif not found.faces:
                    frame_row(fidx, "no_face", f"no face detected in frame {fidx} of {name}")
                for face in found.faces:
                    k, d = face.index, face.det
                    sid = f"{key}/f{fidx:05d}_k{k:02d}"
                    row = {"sample_id": sid, "frame": fidx, "face": k, "det_score": f"{d.score:.3f}"}
                    if face.too_small:
                        reason = (
                            f"face of {d.size:.0f}px < min_face_size {fs.min_face_size} "
                            f"in frame {fidx} of {name}"
                        )
                        rows.append({**row, "status": "too_small", "reason": reason})
                        continue
                    lms = self.mesh(face.crop)
                    if lms is None:
                        reason = f"{STATUSES['no_landmarks']} (face {k} in frame {fidx} of {name})"
                        rows.append({**row, "status": "no_landmarks", "reason": reason})
                        continue
                    img_rel, lm_rel = f"faces/{sid}.png", f"landmarks/{sid}.npy"
                    atomic_imwrite(out / img_rel, cv2.cvtColor(face.crop, cv2.COLOR_RGB2BGR))
                    atomic_save_npy(out / lm_rel, lms)
                    rows.append({**row, "status": "ok", "reason": "", "image": img_rel, "landmarks": lm_rel})
        except MediaError as err:
            # the file itself is refused (cannot be opened, no frame at all): one row for the file
            status = "decode_error" if item.is_video else "unreadable"
            rows = [r for r in rows if r["status"] != "ok"]  # nothing half-indexed is kept
            frame_row(-1, status, f"{item.path}: {err}")
        return rows, n_frames


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
    remove_stale_temps(Path(work), item.key)
    rows, n_frames = _pipeline(fs).index(item, Path(work))
    rec = {"source": item.key, "size": file_size(item.path), "frames": n_frames, "rows": rows}
    atomic_write_text(done_path(Path(work), item.key), json.dumps(rec, sort_keys=True) + "\n")
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
# the entry point


def _assemble(items: list[SourceItem], work: Path) -> list[dict] | None:
    """The manifest rows in item order (labels, splits, clip ids joined), or None if a source is missing."""
    rows: list[dict] = []
    for item in items:
        try:
            rec = json.loads(done_path(work, item.key).read_text())
        except (OSError, ValueError):
            return None
        for r in rec["rows"]:
            vid = item.video_id
            if vid is None:  # a video is one clip; each face of a still photo is its own "clip"
                vid = item.key if item.is_video or r["face"] < 0 else f"{item.key}#{r['face']}"
            row = {**{k: r.get(k, "") for k in ROW_FIELDS}, "source": item.key, "video_id": vid}
            row |= {"label": item.label, "split": item.split, "person": item.person, "origin": item.origin}
            row["person"] = row_person(row)
            rows.append(row)
    return rows


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


def _layout(
    name: str, items: list[SourceItem], cache_dir: str | Path, faces: FaceSettings, mask: MaskSpec
) -> tuple[Path, Path, Path, Path]:
    """``(work dir, manifest, mask dir, masks' completion marker)`` of a data set's cache."""
    crop_key, items_key = _keys(name, items, faces)
    work = Path(cache_dir).expanduser() / name / "index" / crop_key
    mask_dir = work / "masks" / mask.key(landmarker_version())
    return work, work / "manifests" / f"{items_key}.csv", mask_dir, mask_dir / f".complete-{items_key}"


def cache_complete(
    name: str, items: list[SourceItem], cache_dir: str | Path, faces: FaceSettings, mask: MaskSpec
) -> tuple[Path, bool]:
    """``(work dir, complete)``: complete when the manifest and the masks are written, so that
    ``prepare_index`` has nothing left to index or draw. Two ``stat`` calls, no file read."""
    work, manifest, _, marker = _layout(name, items, cache_dir, faces, mask)
    return work, manifest.exists() and marker.exists()


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
    work, manifest, mask_dir, marker = _layout(name, items, cache_dir, faces, mask)
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
    with Workers(workers) as pool:
        if manifest.exists():
            rows = read_manifest(manifest)
            log.info("landmark cache reused: %s\n%s", manifest, status_table(rows))
        else:
            rows = _index_missing(name, items, work, faces, pool, shard, progress)
            if rows is None:
                return None
            write_manifest(manifest, rows)
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
    pool: Workers,
    shard: tuple[int, int],
    progress: bool,
) -> list[dict] | None:
    """Index this shard's sources that have no done record; the manifest rows once all are done."""
    rank, world = shard
    mine = [it for i, it in enumerate(items) if i % world == rank]
    todo = [it for it in mine if not is_done(work, it)]
    what = f"landmarks {name}" + (f" [shard {rank}/{world}]" if world > 1 else "")
    if len(todo) < len(mine):
        log.info("resuming %s: %d of %d files already indexed", work, len(mine) - len(todo), len(mine))
    if todo:
        log.info(
            "indexing %d files into %s (MediaPipe face detection + FaceMesh 478 points, %d worker%s)",
            len(todo), work, pool.n, "s" * (pool.n > 1),
        )  # fmt: skip
        bar = Progress(len(todo), what, enabled=progress)
        try:
            # biggest files first, so no worker is left alone with a long video at the end (the
            # manifest keeps the item order whatever order the files finish in)
            order = sorted(todo, key=lambda it: -(file_size(it.path) or 0))
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
    rows: list[dict], work: Path, mask_dir: Path, mask: MaskSpec, size: int, pool: Workers
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
