"""``python -m lmguide.bench prepare``: how fast the landmark cache is built, against bare FaceMesh.

The workload is the demo videos (each listed ``--copies`` times as separate sources, so two workers
have enough files to share), ``--frames`` sampled per video. Measured in one run, interleaved over
``--repeats`` rounds, medians kept:

* **bare**: MediaPipe FaceMesh alone (``static_image_mode``, 478 points) on the same frames, decoded
  beforehand and not timed: the model's own rate, the ceiling of any pipeline built on it.
* **decode only** and **detector only**: where the rest of the time goes.
* **prepare, 1 worker / 2 workers**: ``prepare_index`` end to end into an empty cache (decode,
  detection, crop, FaceMesh, writes, masks, manifest; worker start-up included).

Ratios: prepare(1 worker) / bare (target >= 0.8 per core) and prepare(2) / prepare(1) (target >= 1.7).
Also the cache size per usable face and per sampled frame for the default settings.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _workload(cache_dir: str, copies: int):
    from lmguide.data.demo import fetch_demo_media
    from lmguide.data.layouts.base import SourceItem

    media = fetch_demo_media(cache_dir)
    videos = sorted(
        p for n, p in media.items() if p.suffix.lower() in (".mp4", ".mov") and n != "no_face.mp4"
    )
    return [SourceItem(p, 0, "train", key=f"copy{c}/{p.name}") for c in range(copies) for p in videos]


def _frames(items, fs) -> list:
    from lmguide.data.prepare import _read_frames

    return [f for it in items for _, f in _read_frames(it, fs) if f is not None]


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _dir_bytes(root: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in root.glob(pattern) if p.is_file())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m lmguide.bench prepare", description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=4, help="times each demo video is listed as a source")
    p.add_argument("--frames", type=int, default=32, help="frames sampled per video (default: 32)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache-dir", default=None, help="where the demo media is (default: paths.cache_dir)")
    p.add_argument("--out", default="bench_results/prepare.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import os

    from lmguide.bench.report import machine, print_table, write_json
    from lmguide.data.faces import FaceFinder, FaceSettings
    from lmguide.data.landmarks import FaceMeshLandmarker
    from lmguide.data.masks import MaskSpec
    from lmguide.data.prepare import prepare_index

    cache_dir = args.cache_dir or os.environ.get("LMGUIDE_CACHE_DIR", "~/.cache/lmguide")
    cache_dir = str(Path(cache_dir).expanduser())
    fs, spec = FaceSettings(frames_per_video=args.frames), MaskSpec()
    items = _workload(cache_dir, args.copies)
    frames = _frames(items, fs)
    n = len(frames)

    mesh, det = FaceMeshLandmarker(), FaceFinder(fs.detector, fs.low_confidence)
    mesh(frames[0]), det.detect(frames[0])  # warm-up (graph start)
    tmp = Path(tempfile.mkdtemp(prefix="lmguide-bench-prepare-"))
    times: dict[str, list[float]] = {k: [] for k in ("bare", "decode", "detect", "prep1", "prep2")}
    sizes: dict = {}
    try:
        for r in range(args.repeats):
            times["bare"].append(_time(lambda: [mesh(f) for f in frames]))
            times["decode"].append(_time(lambda: _frames(items, fs)))
            times["detect"].append(_time(lambda: [det.detect(f) for f in frames]))
            for w in (1, 2):
                out = tmp / f"r{r}w{w}"
                times[f"prep{w}"].append(
                    _time(
                        lambda o=out, w=w: prepare_index(
                            "bench", items, o, fs, spec, workers=w, progress=False
                        )
                    )
                )
                if not sizes:
                    (work,) = (out / "bench" / "index").iterdir()
                    index = prepare_index("bench", items, out, fs, spec, read_only=True)
                    ok = len(index.ok_rows())
                    sizes = {
                        "ok_faces": ok,
                        "frames": n,
                        "crop_png": _dir_bytes(work, "faces/**/*.png") / ok,
                        "landmarks_npy": _dir_bytes(work, "landmarks/**/*.npy") / ok,
                        "mask_png": _dir_bytes(work, "masks/**/*.png") / ok,
                        "records_and_manifest": (
                            _dir_bytes(work, "done/**/*.json") + _dir_bytes(work, "manifests/*")
                        )
                        / n,
                    }
                shutil.rmtree(out)
    finally:
        mesh.close()
        det.close()
        shutil.rmtree(tmp, ignore_errors=True)

    fps = {k: n / statistics.median(v) for k, v in times.items()}
    per_face = sizes["crop_png"] + sizes["landmarks_npy"] + sizes["mask_png"]
    report = {
        "benchmark": "prepare",
        **machine(),
        "workload": f"{len(items)} demo videos x {args.frames} sampled frames = {n} frames",
        "repeats": args.repeats,
        "frames_per_s": fps,
        "ratio_prepare_1worker_to_bare": fps["prep1"] / fps["bare"],
        "speedup_2_workers": fps["prep2"] / fps["prep1"],
        "cache_bytes_per_face": {
            **{k: sizes[k] for k in ("crop_png", "landmarks_npy", "mask_png")},
            "total": per_face,
        },
        "cache_bytes_per_frame": per_face * sizes["ok_faces"] / n + sizes["records_and_manifest"],
        "targets": {"ratio_prepare_1worker_to_bare": 0.8, "speedup_2_workers": 1.7},
    }
    labels = {
        "bare": "bare FaceMesh (frames pre-decoded)",
        "decode": "decode only",
        "detect": "face detector only",
        "prep1": "prepare, 1 worker (end to end)",
        "prep2": "prepare, 2 workers (end to end)",
    }
    rows = [[labels[k], f"{fps[k]:.1f}", f"{fps[k] / fps['bare']:.2f}"] for k in labels]
    print_table(
        f"prepare: {report['workload']}, median of {args.repeats}", ["case", "frames/s", "x bare"], rows
    )
    print(
        f"2 workers vs 1: x{report['speedup_2_workers']:.2f} (target 1.7); prepare/bare per core: "
        f"{report['ratio_prepare_1worker_to_bare']:.2f} (target 0.8)\n"
        f"cache per face: {per_face / 1024:.1f} KiB (crop {sizes['crop_png'] / 1024:.1f}, landmarks "
        f"{sizes['landmarks_npy'] / 1024:.1f}, mask {sizes['mask_png'] / 1024:.1f}); per sampled frame "
        f"{report['cache_bytes_per_frame'] / 1024:.1f} KiB"
    )
    write_json(args.out, report)
    return report
