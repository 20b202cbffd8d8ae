"""Region masks drawn from landmarks: a pure function of (landmarks, MaskSpec, size).

The default regions are the seed's point sets: disks of ``radius`` around a few FaceMesh points of
the eyes, the nose and the mouth. ``radius`` is a fraction of the image side, so a mask drawn at
256 px and one drawn at 128 px agree after resizing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from lmguide.data.cache import config_hash

#: FaceMesh indices of each region (the seed's choice of points).
REGIONS: dict[str, tuple[int, ...]] = {
    "eyes": (33, 133, 159, 145, 362, 385, 380, 386),
    "nose": (1, 2, 98, 327),
    "mouth": (61, 291, 0, 17, 84, 314),
}


@dataclass(frozen=True)
class MaskSpec:
    """How a landmark mask is drawn.

    regions: names from :data:`REGIONS` (or keys of ``extra_regions``).
    radius: disk radius as a fraction of the image side (0.05 → 12.8 px on a 256-px crop).
    soft: False → binary disks; True → Gaussian bumps with sigma = radius / 2 (0.135 at the disk edge).
    """

    regions: tuple[str, ...] = ("eyes", "nose", "mouth")
    radius: float = 0.05
    soft: bool = False
    extra_regions: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "extra_regions", {k: tuple(v) for k, v in dict(self.extra_regions).items()})
        if not self.radius > 0:
            raise ValueError(
                f"landmarks.radius must be > 0 (a fraction of the image side), got {self.radius}"
            )
        if not self.regions:
            raise ValueError("landmarks.regions must name at least one region")
        known = {**REGIONS, **self.extra_regions}
        unknown = [r for r in self.regions if r not in known]
        if unknown:
            raise ValueError(f"landmarks.regions: unknown region(s) {unknown}; known: {sorted(known)}")

    def points(self, region: str | None = None) -> np.ndarray:
        known = {**REGIONS, **self.extra_regions}
        names = self.regions if region is None else (region,)
        return np.array(sorted({i for r in names for i in known[r]}), dtype=np.int64)

    def key(self, landmarker: str) -> str:
        return config_hash({**asdict(self), "landmarker": landmarker})


def draw_mask(
    landmarks: np.ndarray, size: tuple[int, int], spec: MaskSpec, region: str | None = None
) -> np.ndarray:
    """(H, W) float32 mask in [0, 1] for ``landmarks`` given in pixel coordinates of an (H, W) image."""
    h, w = size
    pts = np.asarray(landmarks, dtype=np.float32)[spec.points(region), :2]  # (K, 2)
    r = spec.radius * max(h, w)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # squared distance of every pixel centre to the nearest chosen landmark
    d2 = ((xs[None] - pts[:, 0, None, None]) ** 2 + (ys[None] - pts[:, 1, None, None]) ** 2).min(0)
    if spec.soft:
        sigma = r / 2
        return np.exp(-d2 / (2 * sigma**2)).astype(np.float32)
    return (d2 <= r * r).astype(np.float32)


def hull_mask(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 binary mask of the convex hull of all landmarks (the whole face)."""
    import cv2

    h, w = size
    hull = cv2.convexHull(np.asarray(landmarks)[:, :2].astype(np.float32)).astype(np.int32)
    m = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(m, hull, 1)
    return m.astype(np.float32)
