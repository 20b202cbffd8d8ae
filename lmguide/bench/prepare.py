"""``python -m lmguide.bench prepare``: how fast the landmark cache is built, against bare FaceMesh.

The workload is the demo face videos, each listed ``--copies`` times as separate sources (so two
workers have enough files to share), or with ``--ffpp-tree N`` a FaceForensics++ c23 tree of N links
to them (``lmguide/bench/ffpp_tree.py``) indexed by the real ``ffpp`` layout; ``--frames`` sampled
per video. Measured in one run, interleaved over ``--repeats`` rounds, medians kept:

* **bare**: MediaPipe FaceMesh alone (``static_image_mode``, 478 points) on the same frames, decoded
  beforehand and not timed: the model's own rate, the ceiling of any pipeline built on it.
* **decode only** (per ``--decode`` mode: ``grab`` every frame up to the wanted ones, or ``seek``
  past keyframes, see :class:`lmguide.data.media.VideoFrames`) and **detector only**.
* **prepare, 1 worker** (per decode mode) **/ 2 workers** (the last mode): ``prepare_index`` end to
  end into an empty cache (decode, detection, crop, FaceMesh, writes, masks, manifest). One worker
  runs in this process, its MediaPipe graphs built before the rounds; two start their pool each time.
* **first frame**: a fresh Python process indexing one frame of the first video (interpreter,
  imports, MediaPipe graphs, decode, detection, FaceMesh, writes, manifest, mask).

Ratios: prepare(1 worker) / bare (target >= 0.8 per core; its ceiling, detector + FaceMesh per frame,
is printed beside it), prepare(2) / prepare(1) (target >= 1.7),
seek / grab. Also frames decoded per sampled frame, the load average (these machines are shared) and
the cache size per usable face and per sampled frame for the default settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


def _demo_videos(cache_dir: str) -> list[Path]:
    from lmguide.data.demo import fetch_demo_media

    media = fetch_demo_media(cache_dir)
    return sorted(p for n, p in media.items() if p.suffix.lower() in (".mp4", ".mov") and n != "no_face.mp4")


def _workload(cache_dir: str, copies: int, ffpp_tree: int, tmp: Path) -> tuple[list, str, float | None]:
    """The sources, their description and the seconds the ``ffpp`` layout took to index the tree."""
    from lmguide.data.layouts.base import SourceItem

    videos = _demo_videos(cache_dir)
    if ffpp_tree:
        from lmguide.bench.ffpp_tree import COMPRESSION, build_ffpp_tree
        from lmguide.data.layouts.ffpp import FFPPSource

        root = build_ffpp_tree(tmp / "ffpp", ffpp_tree, videos)
        t = time.perf_counter()
        items = FFPPSource(root=str(root), compression=COMPRESSION, split_dir="splits").items()
        secs = time.perf_counter() - t
        return items, f"FF++ c23 tree of {len(items)} videos (links to {len(videos)} demo videos)", secs
    items = [SourceItem(p, 0, "train", key=f"copy{c}/{p.name}") for c in range(copies) for p in videos]
    return items, f"{len(items)} demo videos", None


@contextmanager
def _decode_env(mode: str):
    """VideoFrames reads its mode from the environment, in this process and in spawned workers."""
    from lmguide.data.media import DECODE_ENV

    old = os.environ.get(DECODE_ENV)
    os.environ[DECODE_ENV] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(DECODE_ENV, None)
        else:
            os.environ[DECODE_ENV] = old


def _decode(items, fs, mode: str, keep: dict | None = None) -> tuple[int, int]:
    """Decode the sampled frames of every item: (frames delivered, frames decoded). With ``keep``, the
    frames of each distinct file are stored there once (the tree's links share their target's)."""
    from lmguide.data.media import VideoFrames

    n = decoded = 0
    for it in items:
        vf = VideoFrames(it.path, fs.frames_per_video, fs.frames_every, threads=1, decode=mode)
        frames = [f for _, f in vf if f is not None]
        n, decoded = n + len(frames), decoded + vf.decoded
        if keep is not None:
            keep.setdefault(it.path.resolve(), frames)
    return n, decoded


_FIRST_FRAME = """
import sys
from pathlib import Path
from lmguide.data.faces import FaceSettings
from lmguide.data.layouts.base import SourceItem
from lmguide.data.masks import MaskSpec
from lmguide.data.prepare import prepare_index
item = SourceItem(Path(sys.argv[1]), 0, "train", key=Path(sys.argv[1]).name)
prepare_index("first", [item], sys.argv[2], FaceSettings(frames_per_video=1), MaskSpec(), progress=False)
"""


def _first_frame(item, out: Path) -> float:
    """Seconds for a fresh process to index one frame of ``item`` (start-up included)."""
    import lmguide

    here = str(Path(lmguide.__file__).resolve().parents[1])  # this checkout, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _FIRST_FRAME, str(item.path), str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"first-frame run failed:\n{proc.stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return secs


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _dir_bytes(root: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in root.glob(pattern) if p.is_file())


def _sizes(out: Path, items, fs, spec, n: int) -> dict:
    from lmguide.data.prepare import prepare_index

    (work,) = (out / "bench" / "index").iterdir()
    ok = len(prepare_index("bench", items, out, fs, spec, read_only=True).ok_rows())
    parts = (
        ("crop_png", "faces/**/*.png"),
        ("landmarks_npy", "landmarks/**/*.npy"),
        ("mask_png", "masks/**/*.png"),
    )
    per = {k: _dir_bytes(work, pattern) / ok for k, pattern in parts}
    meta = (_dir_bytes(work, "done/**/*.json") + _dir_bytes(work, "manifests/*")) / n
    return {"ok_faces": ok, **per, "records_and_manifest": meta}


def main(argv: list[str] | None = None) -> dict:
    from lmguide.data.media import DECODE_MODES

    p = argparse.ArgumentParser(prog="python -m lmguide.bench prepare", description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=4, help="times each demo video is listed as a source")
    p.add_argument(
        "--ffpp-tree",
        type=int,
        default=0,
        metavar="N",
        help="instead: a FF++ c23 tree of N videos (N/5 real) linked to the demo videos",
    )
    p.add_argument("--frames", type=int, default=32, help="frames sampled per video (default: 32)")
    p.add_argument(
        "--decode",
        default="seek",
        help="video decode modes, comma-separated; the last one also runs 2 workers and the first frame "
        "(default: seek; grab,seek compares the two)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache-dir", default=None, help="where the demo media is (default: paths.cache_dir)")
    p.add_argument("--out", default="bench_results/prepare.json")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.decode.split(",") if m.strip()]
    if not modes or set(modes) - set(DECODE_MODES) or len(set(modes)) < len(modes):
        p.error(f"--decode {args.decode!r}: distinct modes among {', '.join(DECODE_MODES)}")
    logging.basicConfig(level=logging.WARNING)

    from lmguide.bench.report import machine, print_table, write_json
    from lmguide.data.faces import FaceFinder, FaceSettings
    from lmguide.data.landmarks import FaceMeshLandmarker
    from lmguide.data.masks import MaskSpec
    from lmguide.data.prepare import _pipeline, prepare_index

    cache_dir = args.cache_dir or os.environ.get("LMGUIDE_CACHE_DIR", "~/.cache/lmguide")
    cache_dir = str(Path(cache_dir).expanduser())
    fs, spec, last = FaceSettings(frames_per_video=args.frames), MaskSpec(), modes[-1]
    tmp = Path(tempfile.mkdtemp(prefix="lmguide-bench-prepare-"))
    load = [os.getloadavg()[0]]
    try:
        items, what, index_s = _workload(cache_dir, args.copies, args.ffpp_tree, tmp)
        distinct: dict = {}
        n, _ = _decode(items, fs, last, keep=distinct)
        frames = [f for it in items for f in distinct[it.path.resolve()]]
        decoded = {m: _decode(items, fs, m)[1] / n for m in modes}

        mesh, det = FaceMeshLandmarker(), FaceFinder(fs.detector, fs.low_confidence)
        mesh(frames[0]), det.detect(frames[0])  # warm-up (graph start)
        _pipeline(fs)  # 1 worker runs in this process: build its graphs now, not in the first case timed
        keys = ["bare", "detect", *(f"decode_{m}" for m in modes), *(f"prep1_{m}" for m in modes), "prep2"]
        times: dict[str, list[float]] = {k: [] for k in keys}
        first: list[float] = []
        sizes: dict = {}
        try:
            for r in range(args.repeats):
                times["bare"].append(_time(lambda: [mesh(f) for f in frames]))
                times["detect"].append(_time(lambda: [det.detect(f) for f in frames]))
                for m in modes:
                    times[f"decode_{m}"].append(_time(lambda m=m: _decode(items, fs, m)))
                for m, w in [*((m, 1) for m in modes), (last, 2)]:
                    out = tmp / f"r{r}w{w}{m}"
                    with _decode_env(m):
                        secs = _time(
                            lambda o=out, w=w: prepare_index(
                                "bench", items, o, fs, spec, workers=w, progress=False
                            )
                        )
                    times[f"prep1_{m}" if w == 1 else "prep2"].append(secs)
                    sizes = sizes or _sizes(out, items, fs, spec, n)
                    shutil.rmtree(out)
                with _decode_env(last):
                    first.append(_first_frame(items[0], tmp / f"first{r}"))
        finally:
            mesh.close()
            det.close()
        load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    fps = {k: n / statistics.median(v) for k, v in times.items()}
    per_face = sizes["crop_png"] + sizes["landmarks_npy"] + sizes["mask_png"]
    report = {
        "benchmark": "prepare",
        **machine(),
        "load_average_1min": {"start": load[0], "end": load[-1]},
        "workload": f"{what} x {args.frames} sampled frames = {n} frames",
        "repeats": args.repeats,
        "decode_modes": modes,
        "frames_per_s": fps,
        "decoded_per_sampled_frame": decoded,
        "ratio_prepare_1worker_to_bare": fps[f"prep1_{last}"] / fps["bare"],
        "speedup_2_workers": fps["prep2"] / fps[f"prep1_{last}"],
        # prepare runs the face detector and FaceMesh on every frame: its ratio to bare cannot pass
        # this, even with decoding, crops and writes free
        "ceiling_ratio_detector_plus_facemesh": fps["detect"] / (fps["detect"] + fps["bare"]),
        "first_frame_s": statistics.median(first),
        "layout_index_s": index_s,
        "cache_bytes_per_face": {
            **{k: sizes[k] for k in ("crop_png", "landmarks_npy", "mask_png")},
            "total": per_face,
        },
        "cache_bytes_per_frame": per_face * sizes["ok_faces"] / n + sizes["records_and_manifest"],
        "targets": {"ratio_prepare_1worker_to_bare": 0.8, "speedup_2_workers": 1.7},
    }
    if {"grab", "seek"} <= set(modes):
        report["ratio_seek_to_grab"] = {k: fps[f"{k}_seek"] / fps[f"{k}_grab"] for k in ("decode", "prep1")}
    labels = {
        "bare": "bare FaceMesh (frames pre-decoded)",
        "detect": "face detector only",
        **{f"decode_{m}": f"decode only ({m})" for m in modes},
        **{f"prep1_{m}": f"prepare, 1 worker ({m})" for m in modes},
        "prep2": f"prepare, 2 workers ({last})",
    }
    rows = [[labels[k], f"{fps[k]:.1f}", f"{fps[k] / fps['bare']:.2f}"] for k in labels]
    print_table(
        f"prepare: {report['workload']}, median of {args.repeats}", ["case", "frames/s", "x bare"], rows
    )
    seek_vs_grab = report.get("ratio_seek_to_grab")
    print(
        f"2 workers vs 1: x{report['speedup_2_workers']:.2f} (target 1.7); prepare/bare per core: "
        f"{report['ratio_prepare_1worker_to_bare']:.2f} (target 0.8; detector + FaceMesh alone: "
        f"{report['ceiling_ratio_detector_plus_facemesh']:.2f})\n"
        + (
            f"seek vs grab: decode x{seek_vs_grab['decode']:.2f}, prepare (1 worker) "
            f"x{seek_vs_grab['prep1']:.2f}\n"
            if seek_vs_grab
            else ""
        )
        + "frames decoded per sampled frame: "
        + ", ".join(f"{m} {v:.1f}" for m, v in decoded.items())
        + f"\nfirst frame (fresh process, 1 frame indexed): {report['first_frame_s']:.1f} s; load "
        f"average {load[0]:.1f} -> {load[-1]:.1f} on {report['cores']} cores\n"
        f"cache per face: {per_face / 1024:.1f} KiB (crop {sizes['crop_png'] / 1024:.1f}, landmarks "
        f"{sizes['landmarks_npy'] / 1024:.1f}, mask {sizes['mask_png'] / 1024:.1f}); per sampled frame "
        f"{report['cache_bytes_per_frame'] / 1024:.1f} KiB"
    )
    write_json(args.out, report)
    return report
