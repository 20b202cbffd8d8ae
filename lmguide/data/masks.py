"""Region masks drawn from landmarks: a pure function of (landmarks, MaskSpec, size).

Two kinds of region, told apart by name:

* **point regions** (:data:`REGIONS`, plus ``MaskSpec.extra_regions``): disks of ``radius`` around a few
  FaceMesh points. The default eyes/nose/mouth are a few points on the eye corners and lids, the
  nose tip and the lip corners (the parts face forgeries most often leave artefacts in); they are
  drawn exactly as before, so masks (and cache keys) of existing configs do not change.
* **contour regions** (:data:`CONTOURS`): filled areas built from MediaPipe's FaceMesh connection sets
  (``FACEMESH_LEFT_EYE``, ``FACEMESH_LIPS``, ...). They follow the shape of the part rather than
  sprinkling disks on it, so an eye mask is the eye opening and not a string of beads.

``radius`` is a fraction of the image side, so a mask drawn at 256 px and one drawn at 128 px agree after
resizing.

Drawing, for both kinds, is "squared distance to the region, then threshold or Gaussian": a pixel
centre at distance ``d`` from the region gets ``d <= r`` for point regions (disks) and ``d == 0``
(inside) for contour regions in binary masks, and ``exp(-d^2 / (2 sigma^2))`` with
``sigma = radius / 2 * side`` in soft masks. The soft mask is therefore 1 on the points / inside the
filled area and falls to 0.135 at one ``radius`` outside it. For contour regions ``radius`` is *not*
a dilation margin of the binary mask: the binary fill is the part itself, ``radius`` only sets the
width of the soft fall-off (and stays in the cache key, so changing it re-draws masks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache

import numpy as np

from lmguide.data.cache import config_hash

#: FaceMesh indices of each point region (eye corners and lids, nose tip, lip corners), drawn as disks.
REGIONS: dict[str, tuple[int, ...]] = {
    "eyes": (33, 133, 159, 145, 362, 385, 380, 386),
    "nose": (1, 2, 98, 327),
    "mouth": (61, 291, 0, 17, 84, 314),
}

#: Contour regions: the MediaPipe connection sets (names in
#: ``mediapipe.python.solutions.face_mesh_connections``) whose parts make up each region. MediaPipe's
#: left/right are the subject's: ``left_eye_contour`` lies on the right half of an unflipped image.
#: Each set is one anatomical part and is filled as one convex hull (see :func:`contour_parts`).
CONTOURS: dict[str, tuple[str, ...]] = {
    "left_eye_contour": ("FACEMESH_LEFT_EYE",),
    "right_eye_contour": ("FACEMESH_RIGHT_EYE",),
    "eye_contours": ("FACEMESH_LEFT_EYE", "FACEMESH_RIGHT_EYE"),
    "left_eyebrow": ("FACEMESH_LEFT_EYEBROW",),
    "right_eyebrow": ("FACEMESH_RIGHT_EYEBROW",),
    "eyebrows": ("FACEMESH_LEFT_EYEBROW", "FACEMESH_RIGHT_EYEBROW"),
    "lips": ("FACEMESH_LIPS",),
    "nose_contour": ("FACEMESH_NOSE",),
    "face_oval": ("FACEMESH_FACE_OVAL",),
    "left_iris": ("FACEMESH_LEFT_IRIS",),
    "right_iris": ("FACEMESH_RIGHT_IRIS",),
    "irises": ("FACEMESH_LEFT_IRIS", "FACEMESH_RIGHT_IRIS"),
}


@cache
def _connection_set(name: str) -> tuple[int, ...]:
    """Sorted landmark indices of one MediaPipe connection set.

    Read from MediaPipe on first use rather than copied here, so the indices always match the
    installed landmarker (whose version is part of every mask cache key). The import is lazy: it only
    costs when a contour region is drawn.
    """
    from mediapipe.python.solutions import face_mesh_connections

    edges = getattr(face_mesh_connections, name)
    return tuple(sorted({i for edge in edges for i in edge}))


def contour_parts(region: str) -> tuple[tuple[int, ...], ...]:
    """The index sets of a contour region, one per part (connection set), each filled as one hull.

    Why a hull per connection set and not per connected component of the edge graph: each eyebrow is
    two open chains (upper and lower edge) that only enclose the brow together, and the lips are two
    loops (outer and inner) of one part. Filling the convex hull of the whole set covers the brow and
    the lips (the mouth opening included, which is simpler and harmless for a guidance mask) while
    keeping the two eyes, brows and irises separate. Eyes, irises, nose and face oval are close to
    convex; the hull only rounds off the lips' cupid's bow.
    """
    return tuple(_connection_set(name) for name in CONTOURS[region])


@dataclass(frozen=True)
class MaskSpec:
    """How a landmark mask is drawn.

    regions: names from :data:`REGIONS` (disks), :data:`CONTOURS` (filled parts) or keys of
        ``extra_regions`` (disks; an extra region overrides a built-in one of the same name).
    radius: disk radius as a fraction of the image side (0.05 → 12.8 px on a 256-px crop); for contour
        regions only the width of the soft fall-off.
    soft: False → binary; True → 1 on the points / inside the parts, Gaussian fall-off with
        sigma = radius / 2 outside (0.135 at one radius out).
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
        known = {*REGIONS, *CONTOURS, *self.extra_regions}
        unknown = [r for r in self.regions if r not in known]
        if unknown:
            raise ValueError(f"landmarks.regions: unknown region(s) {unknown}; known: {sorted(known)}")

    def is_contour(self, region: str) -> bool:
        """Region kind, inferred from the name: a contour unless it names a point set."""
        return region not in self.extra_regions and region not in REGIONS

    def point_regions(self) -> dict[str, tuple[int, ...]]:
        return {**REGIONS, **self.extra_regions}

    def points(self, region: str | None = None) -> np.ndarray:
        """Sorted indices of every landmark a region (or, by default, all regions) is drawn from."""
        disks = self.point_regions()
        names = self.regions if region is None else (region,)
        idx: set[int] = set()
        for r in names:
            if r in disks:
                idx.update(disks[r])
            else:
                idx.update(i for part in contour_parts(r) for i in part)
        return np.array(sorted(idx), dtype=np.int64)

    def key(self, landmarker: str) -> str:
        return config_hash({**asdict(self), "landmarker": landmarker})


def _hull(points: np.ndarray) -> np.ndarray:
    """(V, 2) convex hull vertices, counter-clockwise in the (x, y) frame (positive signed area)."""
    import cv2

    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    x, y = hull[:, 0], hull[:, 1]
    if (x * np.roll(y, -1) - np.roll(x, -1) * y).sum() < 0:
        hull = hull[::-1]
    return hull


def _polygon_dist2(hull: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Squared distance of every pixel centre to the filled convex polygon ``hull`` (0 inside).

    Exact geometry at pixel centres rather than a raster fill, so the filled area matches the polygon
    area (no half-pixel border) and a part lying just outside the image still shades it in soft masks.
    """
    d2 = np.full(xs.shape, np.inf)
    inside = np.full(xs.shape, len(hull) >= 3)
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        ex, ey = b - a
        px, py = xs - a[0], ys - a[1]
        inside &= ex * py - ey * px >= 0
        t = np.clip((px * ex + py * ey) / max(ex * ex + ey * ey, 1e-12), 0.0, 1.0)
        d2 = np.minimum(d2, (px - t * ex) ** 2 + (py - t * ey) ** 2)
    d2[inside] = 0.0
    return d2


def draw_mask(
    landmarks: np.ndarray, size: tuple[int, int], spec: MaskSpec, region: str | None = None
) -> np.ndarray:
    """(H, W) float32 mask in [0, 1] for ``landmarks`` given in pixel coordinates of an (H, W) image.

    Draws every region of ``spec`` (or just ``region``) and takes the pixel-wise maximum.
    """
    h, w = size
    lms = np.asarray(landmarks, dtype=np.float32)
    r = spec.radius * max(h, w)
    sigma = r / 2
    names = spec.regions if region is None else (region,)
    disks = spec.point_regions()
    disk_idx = sorted({i for n in names if not spec.is_contour(n) for i in disks[n]})
    mask = np.zeros((h, w), np.float32)
    if disk_idx and not spec.soft:
        # binary disks touch only their bounding boxes: the same per-pixel test as below, ~100x less work
        for px, py in lms[disk_idx, :2]:
            x0, x1 = max(0, int(np.floor(px - r))), min(w, int(np.ceil(px + r)) + 1)
            y0, y1 = max(0, int(np.floor(py - r))), min(h, int(np.ceil(py + r)) + 1)
            if x0 < x1 and y0 < y1:
                xs = np.arange(x0, x1, dtype=np.float32)[None, :]
                ys = np.arange(y0, y1, dtype=np.float32)[:, None]
                mask[y0:y1, x0:x1][(xs - px) ** 2 + (ys - py) ** 2 <= r * r] = 1.0
        disk_idx = []
    parts = {part for n in names if spec.is_contour(n) for part in contour_parts(n)}
    if not (disk_idx or parts):
        return mask
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if disk_idx:
        pts = lms[disk_idx, :2]  # (K, 2)
        # squared distance of every pixel centre to the nearest chosen landmark
        d2 = ((xs[None] - pts[:, 0, None, None]) ** 2 + (ys[None] - pts[:, 1, None, None]) ** 2).min(0)
        if spec.soft:
            mask = np.exp(-d2 / (2 * sigma**2)).astype(np.float32)
        else:
            mask = (d2 <= r * r).astype(np.float32)
    for part in sorted(parts):
        d2 = _polygon_dist2(_hull(lms[list(part), :2]), xs.astype(np.float64), ys.astype(np.float64))
        m = np.exp(-d2 / (2 * sigma**2)) if spec.soft else (d2 == 0)
        mask = np.maximum(mask, m.astype(np.float32))
    return mask


def hull_mask(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 binary mask of the convex hull of all landmarks (the whole face)."""
    import cv2

    h, w = size
    hull = cv2.convexHull(np.asarray(landmarks)[:, :2].astype(np.float32)).astype(np.int32)
    m = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(m, hull, 1)
    return m.astype(np.float32)
