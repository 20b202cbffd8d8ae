"""Why would the reals of one source look fake? The usual suspects, measured per source.

``python -m lmguide.data.source_stats [overrides] [--run DIR] [--sample N] [--out FILE]`` composes the
training config (``experiment=demo`` unless overridden), reads its prepared index and reports, per
source (the demo's packages), over the real faces:

* compression: the files' formats, the JPEG quality estimated from each JPEG's luminance quantisation
  table (IJG scaling of the standard table), a video's codec and bit rate;
* native face resolution: the detector box side in source pixels, and the factor the crop was scaled
  by to ``face_size`` (> 1: the face was enlarged, its detail invented by interpolation);
* colour and detail of the cached crops: mean luminance and its spread, saturation, and sharpness
  (variance of the Laplacian);
* crop geometry: predict's crop of the same face (its face pipeline run afresh on the source frame)
  against the cache's crop, as the mean absolute pixel difference.

With ``--run``, each source's reals' median P(fake) and the share called fake (``curves/sources.json`` of
that run) stand beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from lmguide.data.sources import package_of

#: the IJG standard luminance quantisation table (JPEG Annex K), in zigzag-free row order
_STD_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56]
    + [14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92]
    + [49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)
VIDEO = (".mp4", ".mov", ".avi", ".mkv", ".webm")


def jpeg_quality(path: Path) -> float | None:
    """The IJG quality (1-100) whose scaled standard table best matches the file's luminance table;
    None for a file that is not a JPEG."""
    from PIL import Image

    with Image.open(path) as im:
        tables = getattr(im, "quantization", None)
        if im.format != "JPEG" or not tables:
            return None
        luma = np.array(sorted(tables.items())[0][1], dtype=np.float64)
    # PIL gives the table in zigzag order: compare sorted values, which the scaling keeps in order
    scale = float(np.median(np.sort(luma) / np.sort(_STD_LUMA)) * 100)
    q = (200 - scale) / 2 if scale <= 100 else 5000 / scale
    return float(np.clip(q, 1, 100))


def file_stats(path: Path) -> dict:
    """Format, JPEG quality, a video's codec and bit rate (kbit/s), and the frame size."""
    out: dict = {"format": path.suffix.lower().lstrip(".")}
    if path.suffix.lower() in VIDEO:
        cap = cv2.VideoCapture(str(path))
        try:
            fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
            n, fps = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS) or 25.0
            out["codec"] = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip()
            out["kbps"] = path.stat().st_size * 8 / 1000 / max(n / fps, 1e-6)
            out["size"] = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        finally:
            cap.release()
        return out
    out["jpeg_quality"] = jpeg_quality(path)
    return out


def crop_stats(rgb: np.ndarray) -> dict:
    """Luminance mean and spread, saturation and sharpness of one RGB uint8 crop."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    return {
        "luma": float(grey.mean()),
        "luma_sd": float(grey.std()),
        "saturation": float(hsv[..., 1].mean()),
        "sharpness": float(cv2.Laplacian(grey, cv2.CV_64F).var()),
    }


def _frame(path: Path, index: int) -> np.ndarray | None:
    if path.suffix.lower() in VIDEO:
        cap = cv2.VideoCapture(str(path))
        try:
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, bgr = cap.read()
        finally:
            cap.release()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None
    from lmguide.data.media import read_image

    return read_image(path)


def geometry(pipeline, fs, path: Path, row: dict, cached: np.ndarray) -> dict | None:
    """Predict's crop of the manifest row's face against the cached crop: the detector box side
    (source pixels), the scale to ``face_size`` and the mean absolute pixel difference."""
    rgb = _frame(path, int(row["frame"]))
    if rgb is None:
        return None
    policy = fs.video_faces if path.suffix.lower() in VIDEO else fs.image_faces
    faces = pipeline(rgb, policy).faces
    k = int(row["face"])
    if k >= len(faces) or faces[k].crop is None:
        return None
    side = faces[k].det.size
    diff = np.abs(faces[k].crop.astype(np.float64) - cached.astype(np.float64)).mean()
    return {"face_px": float(side), "upscale": fs.face_size / (fs.crop_scale * side), "crop_mae": float(diff)}


def source_report(rows: list[dict], root: Path, paths: dict[str, Path], fs, sample: int = 30) -> dict:
    """Per source: the statistics above over its real faces (geometry on ``sample`` evenly spaced ones)."""
    from lmguide.data.faces import FacePipeline

    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["label"] == 0:
            by_source[package_of(r.get("origin", "")) or "unknown"].append(r)
    out = {}
    with FacePipeline(fs) as pipeline:
        for src, src_rows in sorted(by_source.items()):
            files = {r["source"]: file_stats(paths[r["source"]]) for r in src_rows if r["source"] in paths}
            crops = [cv2.cvtColor(cv2.imread(str(root / r["image"])), cv2.COLOR_BGR2RGB) for r in src_rows]
            stats = [crop_stats(c) for c in crops]
            pick = np.unique(
                np.linspace(0, len(src_rows) - 1, min(sample, len(src_rows))).round().astype(int)
            )
            geo = [
                g
                for i in pick
                if src_rows[i]["source"] in paths
                and (g := geometry(pipeline, fs, paths[src_rows[i]["source"]], src_rows[i], crops[i]))
            ]
            q = [f["jpeg_quality"] for f in files.values() if f.get("jpeg_quality") is not None]
            out[src] = {
                "faces": len(src_rows),
                "files": len(files),
                "formats": dict(
                    sorted(_count(f.get("codec") or f["format"] for f in files.values()).items())
                ),
                "jpeg_quality_median": statistics.median(q) if q else None,
                "video_kbps_median": _median([f["kbps"] for f in files.values() if "kbps" in f]),
                **{k: _median([s[k] for s in stats]) for k in ("luma", "luma_sd", "saturation", "sharpness")},
                "geometry_faces": len(geo),
                **{k: _median([g[k] for g in geo]) for k in ("face_px", "upscale", "crop_mae")},
            }
    return out


def _count(values) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for v in values:
        out[v] += 1
    return out


def _median(v: list[float]) -> float | None:
    return float(statistics.median(v)) if v else None


COLUMNS = (
    ("faces", "real faces", "{:d}"),
    ("formats", "files by format", "{}"),
    ("jpeg_quality_median", "JPEG quality", "{:.0f}"),
    ("video_kbps_median", "video kbit/s", "{:.0f}"),
    ("face_px", "face box (px)", "{:.0f}"),
    ("upscale", "crop scale ×", "{:.2f}"),
    ("luma", "luminance", "{:.0f}"),
    ("luma_sd", "luminance sd", "{:.0f}"),
    ("saturation", "saturation", "{:.0f}"),
    ("sharpness", "sharpness", "{:.0f}"),
    ("crop_mae", "predict vs cache crop (MAE)", "{:.2f}"),
    ("reals_median_p_fake", "reals' median P(fake)", "{:.3f}"),
    ("reals_called_fake", "reals called fake", "{:.0%}"),
)


PAGE = """# Sources: what differs between the demo's packages

<!-- generated by lmguide.data.source_stats --out: do not edit by hand, re-run the command -->

```bash
{command}
```

Per source, over its real faces (the manifest's usable rows): the files' formats (a video by codec), the
median JPEG quality estimated from each JPEG's luminance quantisation table, the median video bit rate,
the median detector box side in source pixels and the factor the crop was scaled by to `face_size`
(> 1: enlarged), the median luminance, its spread, saturation and sharpness (variance of the Laplacian)
of the cached crops, and predict's crop of the same face (its pipeline run afresh on the source frame,
on up to 30 faces per source) against the cache's, as the mean absolute pixel difference. The last two
columns come from the run named by `--run` (`curves/sources.json`): the reals' median P(fake) and the
share called fake at that run's stored threshold.

{table}"""


def markdown(report: dict) -> str:
    lines = ["| source | " + " | ".join(c[1] for c in COLUMNS) + " |", "| --- |" + " --- |" * len(COLUMNS)]
    for src, r in report.items():
        cells = []
        for key, _, fmt in COLUMNS:
            v = r.get(key)
            if isinstance(v, dict):
                v = ", ".join(f"{k} {n}" for k, n in v.items())
                cells.append(v)
            else:
                cells.append("–" if v is None else fmt.format(v))
        lines.append(f"| {src} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    import hydra
    from hydra import compose, initialize_config_dir

    from lmguide.data.faces import face_settings
    from lmguide.runs.runtime import CONF_DIR

    ap = argparse.ArgumentParser(
        prog="python -m lmguide.data.source_stats", description=__doc__.split("\n")[0]
    )
    ap.add_argument("overrides", nargs="*", help="training config overrides (default: experiment=demo)")
    ap.add_argument("--run", type=Path, help="a run dir: its curves/sources.json adds the reals' P(fake)")
    ap.add_argument("--sample", type=int, default=30, help="faces per source whose crop is redone")
    ap.add_argument("--out", type=Path, help="also write the table (markdown) and a .json beside it")
    args = ap.parse_args(argv)
    overrides = args.overrides or ["experiment=demo"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "paths.output_dir=/tmp"])
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    paths = {item.key: Path(item.path) for item in dm.source.items()}
    report = source_report(
        dm.index.ok_rows(), dm.index.root, paths, face_settings(cfg.data.faces), args.sample
    )
    if args.run:
        scored = json.loads((args.run / "curves" / "sources.json").read_text())["sources"]
        for src, r in report.items():
            real = scored.get(src, {}).get("real", {})
            r["reals_median_p_fake"], r["reals_called_fake"] = real.get("median"), real.get("called_fake")
    table = markdown(report)
    print(table)
    if args.out:
        argv_text = " ".join(
            ["python -m lmguide.data.source_stats", *(argv if argv is not None else sys.argv[1:])]
        )
        args.out.write_text(PAGE.format(command=argv_text, table=table))
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
