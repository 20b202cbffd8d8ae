"""The pictures shown beside a verdict, shared by the web page and predict's HTML report: which scored
faces to draw (an image's faces; a video's most suspect frame, inside its fake run when there is one)
and each face's tiles (crop, mean attention with the landmark mask outlined, Grad-CAM, each head)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmguide.runs.errors import VisualizeError
from lmguide.viz.explain import explain, face_from_crop


@dataclass
class FaceTiles:
    tiles: list[tuple[np.ndarray, str]] = field(default_factory=list)  # (RGB uint8, caption)
    explained_prob: float | None = None  # P(fake) of the explanation's own forward pass (same crop)
    note: str = ""  # why a face has only its crop (no landmarks), or why a map is flat


def faces_to_draw(result, decision) -> list:
    """The scored FrameResults whose pictures go beside the verdict: every face of an image; for a
    video, the faces of its most suspect sampled frame, taken inside the fake run when the video is
    fake (the frames the verdict rests on)."""
    scored = [f for f in result.frames if f.prob_fake is not None]
    if result.kind != "video" or not scored:
        return scored
    lo, hi = decision.run or (-1, 1 << 62)
    top = max(scored, key=lambda f: (lo <= f.frame <= hi, f.prob_fake)).frame
    return [f for f in scored if f.frame == top]


def face_tiles(
    model, run_cfg, crop: np.ndarray, fr, name: str, size: int, alpha: float, threshold: float, mask_points
) -> FaceTiles:
    """visualize's pictures of the crop predict scored (``fr``: its FrameResult); a crop without
    landmarks comes back alone, with the reason."""
    tag = f"face {fr.face or 0}" + (f", frame {fr.frame}" if fr.frame else "")
    try:
        fi = face_from_crop(crop, run_cfg, fr.box, fr.det_score or 0.0, name=name)
    except VisualizeError as err:
        return FaceTiles([(crop, f"{tag}: crop")], None, str(err))
    ex = explain(model, fi, fi.landmarks[mask_points], size, 1, alpha, threshold=threshold)
    img = ex.images
    heads = sorted(k for k in img if k.startswith("attention_head"))
    tiles = [
        (img["face"], f"{tag}: crop"),
        (img["attention_mean"], f"{tag}: mean attention, landmark mask outlined"),
        (img["gradcam"], f"{tag}: Grad-CAM (fake)"),
        *[(img[k], f"{tag}: head {k.removeprefix('attention_head')}") for k in heads],
    ]
    return FaceTiles(tiles, ex.prob_fake, "; ".join(ex.warnings))
