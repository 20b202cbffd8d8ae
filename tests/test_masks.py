"""Masks land on the right pixels for known landmarks."""

import cv2
import numpy as np
import pytest

from lmguide.data.masks import CONTOURS, REGIONS, MaskSpec, contour_parts, draw_mask, hull_mask


def _landmarks_at(points: dict[int, tuple[float, float]]) -> np.ndarray:
    lms = np.full((478, 3), -1000.0, np.float32)  # everything far outside the image
    for i, (x, y) in points.items():
        lms[i, :2] = (x, y)
    return lms


def test_binary_disk_on_the_right_pixels():
    spec = MaskSpec(regions=("nose",), radius=0.1)  # 10 px on a 100-px image
    lms = _landmarks_at({1: (30, 40)})
    m = draw_mask(lms, (100, 100), spec)
    assert m.dtype == np.float32 and m.shape == (100, 100)
    assert m[40, 30] == 1 and m[40, 40] == 1 and m[50, 30] == 1  # centre, radius along x and y
    assert m[40, 41] == 0 and m[51, 30] == 0 and m[47, 37] == 1 and m[48, 38] == 0
    ys, xs = np.nonzero(m)
    assert len(xs) == int(
        (((np.mgrid[0:100, 0:100] - np.array([40, 30])[:, None, None]) ** 2).sum(0) <= 100).sum()
    )


@pytest.mark.parametrize("radius", [0.02, 0.05, 0.3])
def test_binary_disks_equal_the_distance_formula_everywhere(radius):
    """The bounding-box drawing equals min-distance <= r over the whole image, faces off the edge too."""
    rng = np.random.default_rng(1)
    spec = MaskSpec(radius=radius)
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float32)
    for _ in range(20):
        lms = rng.uniform(-30, 126, (478, 3)).astype(np.float32)
        pts = lms[spec.points(), :2]
        d2 = ((xx[None] - pts[:, 0, None, None]) ** 2 + (yy[None] - pts[:, 1, None, None]) ** 2).min(0)
        want = (d2 <= (radius * 96) ** 2).astype(np.float32)
        np.testing.assert_array_equal(draw_mask(lms, (96, 96), spec), want)


def test_only_the_chosen_regions_are_drawn():
    pts = {REGIONS["eyes"][0]: (20, 20), REGIONS["mouth"][0]: (50, 80), REGIONS["nose"][0]: (50, 50)}
    lms = _landmarks_at(pts)
    eyes = draw_mask(lms, (100, 100), MaskSpec(regions=("eyes",), radius=0.05))
    assert eyes[20, 20] == 1 and eyes[80, 50] == 0 and eyes[50, 50] == 0
    allr = draw_mask(lms, (100, 100), MaskSpec(radius=0.05))
    assert allr[20, 20] == allr[80, 50] == allr[50, 50] == 1


def test_soft_mask_is_gaussian():
    spec = MaskSpec(regions=("nose",), radius=0.1, soft=True)
    m = draw_mask(_landmarks_at({1: (50, 50)}), (100, 100), spec)
    assert m[50, 50] == pytest.approx(1.0)
    assert m[50, 60] == pytest.approx(np.exp(-2), rel=1e-5)  # sigma = radius / 2, edge at 2 sigma
    assert 0 < m[50, 70] < m[50, 60]


def test_radius_scales_with_image_size():
    spec = MaskSpec(regions=("nose",), radius=0.1)
    small = draw_mask(_landmarks_at({1: (25, 25)}), (50, 50), spec)
    big = draw_mask(_landmarks_at({1: (50, 50)}), (100, 100), spec)
    assert big.mean() == pytest.approx(small.mean(), rel=0.1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"radius": 0}, "radius"),
        ({"radius": -1}, "radius"),
        ({"regions": ("ears",)}, "ears"),
        ({"regions": ()}, "at least one"),
    ],
)
def test_bad_mask_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskSpec(**kwargs)


def test_key_changes_with_config_and_landmarker():
    a = MaskSpec()
    assert a.key("v1") == MaskSpec().key("v1")
    assert a.key("v1") != MaskSpec(radius=0.06).key("v1")
    assert a.key("v1") != MaskSpec(soft=True).key("v1")
    assert a.key("v1") != a.key("v2")


# --- contour regions (filled MediaPipe FaceMesh parts) -----------------------------------------------


def _on_circle(indices, cx: float, cy: float, r: float) -> dict[int, tuple[float, float]]:
    """Spread ``indices`` evenly on a circle (the hull is then a regular polygon of known area)."""
    angles = np.linspace(0, 2 * np.pi, len(indices), endpoint=False)
    return {i: (cx + r * np.cos(a), cy + r * np.sin(a)) for i, a in zip(indices, angles, strict=True)}


def _regular_polygon_area(n: int, r: float) -> float:
    return 0.5 * n * r * r * np.sin(2 * np.pi / n)


def _chains(connection_set: str) -> list[list[int]]:
    """Connected components of a MediaPipe connection set's edge graph (index lists)."""
    from mediapipe.python.solutions import face_mesh_connections

    comps: list[set[int]] = []
    for a, b in getattr(face_mesh_connections, connection_set):
        hit = [c for c in comps if a in c or b in c]
        merged = {a, b}.union(*hit)
        comps = [c for c in comps if c not in hit] + [merged]
    return [sorted(c) for c in comps]


def test_contour_fill_has_the_area_and_centre_of_its_polygon():
    (eye,) = contour_parts("left_eye_contour")
    assert len(eye) == 16
    m = draw_mask(
        _landmarks_at(_on_circle(eye, 64, 64, 20)), (128, 128), MaskSpec(regions=("left_eye_contour",))
    )
    assert m.dtype == np.float32 and m.shape == (128, 128) and set(np.unique(m)) == {0, 1}
    area = m.sum()
    # pixel count vs the exact 16-gon: only pixels the border cuts can differ
    assert area == pytest.approx(_regular_polygon_area(16, 20), rel=0.01)
    # ... and vs the circle the points lie on: the 16-gon is 2.5 % smaller
    assert area == pytest.approx(np.pi * 20**2, rel=0.04)
    ys, xs = np.nonzero(m)
    assert xs.mean() == pytest.approx(64, abs=0.25) and ys.mean() == pytest.approx(64, abs=0.25)
    assert ((xs - 64) ** 2 + (ys - 64) ** 2).max() <= 20**2


def test_both_eyes_are_separate_parts():
    (left,) = contour_parts("left_eye_contour")
    (right,) = contour_parts("right_eye_contour")
    lms = _landmarks_at({**_on_circle(left, 88, 64, 12), **_on_circle(right, 40, 64, 12)})
    both = draw_mask(lms, (128, 128), MaskSpec(regions=("eye_contours",)))
    one_l = draw_mask(lms, (128, 128), MaskSpec(regions=("left_eye_contour",)))
    one_r = draw_mask(lms, (128, 128), MaskSpec(regions=("right_eye_contour",)))
    assert both[64, 64] == 0  # no hull bridging the two eyes
    assert one_l[64, 88] == 1 and one_l[64, 40] == 0 and one_r[64, 40] == 1 and one_r[64, 88] == 0
    assert not (one_l * one_r).any()
    np.testing.assert_array_equal(both, one_l + one_r)
    n_labels, _ = cv2.connectedComponents(both.astype(np.uint8))
    assert n_labels == 3  # background + two eyes


def test_face_oval_fills_its_hull():
    (oval,) = contour_parts("face_oval")
    angles = np.linspace(0, 2 * np.pi, len(oval), endpoint=False)
    pts = {i: (64 + 40 * np.cos(a), 64 + 55 * np.sin(a)) for i, a in zip(oval, angles, strict=True)}
    lms = _landmarks_at(pts)
    m = draw_mask(lms, (128, 128), MaskSpec(regions=("face_oval",)))
    ys, xs = np.mgrid[0:128, 0:128]
    ell = ((xs - 64) / 40.0) ** 2 + ((ys - 64) / 55.0) ** 2
    assert m[ell <= 0.98].all() and not m[ell > 1].any()
    # the raster fill of the same hull (integer vertices, border pixels included) agrees up to that border
    raster = hull_mask(lms[list(oval)], (128, 128))
    assert (m * raster).sum() / np.maximum(m, raster).sum() > 0.96


def test_eyebrow_chains_are_filled_together():
    """Each brow is two open chains (upper and lower edge): the fill is the area they enclose together."""
    chains = _chains("FACEMESH_LEFT_EYEBROW")
    assert len(chains) == 2 and all(len(c) == 5 for c in chains)
    xs = np.linspace(20.5, 60.5, 5)
    pts = {i: (x, 30.5) for i, x in zip(chains[0], xs, strict=True)}
    pts |= {i: (x, 40.5) for i, x in zip(chains[1], xs, strict=True)}
    m = draw_mask(_landmarks_at(pts), (100, 100), MaskSpec(regions=("left_eyebrow",)))
    expected = np.zeros((100, 100), np.float32)
    expected[31:41, 21:61] = 1  # pixel centres inside [20.5, 60.5] x [30.5, 40.5]
    np.testing.assert_array_equal(m, expected)
    assert draw_mask(_landmarks_at(pts), (100, 100), MaskSpec(regions=("eyebrows",))).sum() == 400


def test_lips_include_the_mouth_opening():
    loops = _chains("FACEMESH_LIPS")
    assert len(loops) == 2 and all(len(c) == 20 for c in loops)
    lms = _landmarks_at({**_on_circle(loops[0], 64, 64, 20), **_on_circle(loops[1], 64, 64, 8)})
    m = draw_mask(lms, (128, 128), MaskSpec(regions=("lips",)))
    assert m[64, 64] == 1  # the opening inside the inner loop
    assert m.sum() == pytest.approx(_regular_polygon_area(20, 20), rel=0.01)


def test_soft_contour_is_one_inside_with_gaussian_fall_off():
    chains = _chains("FACEMESH_LEFT_EYEBROW")
    xs = np.linspace(20.5, 60.5, 5)
    pts = {i: (x, 30.5) for i, x in zip(chains[0], xs, strict=True)}
    pts |= {i: (x, 40.5) for i, x in zip(chains[1], xs, strict=True)}
    lms = _landmarks_at(pts)
    hard = draw_mask(lms, (100, 100), MaskSpec(regions=("left_eyebrow",), radius=0.1))
    soft = draw_mask(lms, (100, 100), MaskSpec(regions=("left_eyebrow",), radius=0.1, soft=True))
    assert soft.dtype == np.float32 and soft.min() >= 0 and soft.max() == 1
    assert (soft[hard == 1] == 1).all()
    sigma = 0.1 * 100 / 2  # radius / 2 of the image side
    # pixel (y=35, x=70) is 9.5 px right of the right edge; (y=50, x=70) is 9.5 px right and 9.5 px below
    assert soft[35, 70] == pytest.approx(np.exp(-(9.5**2) / (2 * sigma**2)), rel=1e-5)
    assert soft[50, 70] == pytest.approx(np.exp(-2 * 9.5**2 / (2 * sigma**2)), rel=1e-5)
    row = soft[35, 60:]
    assert (np.diff(row) < 0).all()  # falls off monotonically away from the part


def test_point_and_contour_regions_combine():
    (eye,) = contour_parts("left_eye_contour")
    lms = _landmarks_at({**_on_circle(eye, 30, 30, 10), 1: (80, 80)})
    m = draw_mask(lms, (100, 100), MaskSpec(regions=("left_eye_contour", "nose"), radius=0.05))
    assert m[30, 30] == 1 and m[80, 80] == 1 and m[80, 85] == 1 and m[55, 55] == 0
    np.testing.assert_array_equal(
        m,
        np.maximum(
            draw_mask(lms, (100, 100), MaskSpec(regions=("left_eye_contour",))),
            draw_mask(lms, (100, 100), MaskSpec(regions=("nose",), radius=0.05)),
        ),
    )


def test_points_of_contour_regions():
    spec = MaskSpec(regions=("eye_contours", "nose_contour", "lips"))
    left = spec.points("left_eye_contour")
    assert len(left) == 16 and {263, 362}.issubset(left)  # the subject's left eye (MediaPipe's naming)
    assert set(REGIONS["eyes"]).issubset(spec.points("eye_contours"))
    assert len(spec.points("lips")) == 40 and len(spec.points("face_oval")) == 36
    assert len(spec.points("irises")) == 8
    union = set(spec.points("eye_contours")) | set(spec.points("nose_contour")) | set(spec.points("lips"))
    assert set(spec.points()) == union
    assert set(CONTOURS).isdisjoint(REGIONS)


def test_unknown_region_error_lists_contour_names():
    with pytest.raises(ValueError, match="ears") as err:
        MaskSpec(regions=("ears",))
    for name in ("eyes", "eye_contours", "left_eye_contour", "lips", "nose_contour", "face_oval", "irises"):
        assert repr(name) in str(err.value)


def test_default_key_is_unchanged_and_contours_get_their_own():
    # value of MaskSpec().key("x") before contour regions existed: old mask caches stay valid
    assert MaskSpec().key("x") == "d8ad55ba4c"
    assert MaskSpec(regions=("eye_contours", "nose_contour", "lips")).key("x") != MaskSpec().key("x")
    assert MaskSpec(regions=("face_oval",)).key("x") != MaskSpec(regions=("face_oval",), soft=True).key("x")


@pytest.mark.parametrize(
    "name,regions",
    [
        ("contours", ("eye_contours", "nose_contour", "lips")),
        ("face_oval", ("face_oval",)),
        ("eyebrows_eyes", ("eyebrows", "eye_contours")),
        ("eyes_nose_mouth", ("eyes", "nose", "mouth")),
    ],
)
def test_landmark_configs_compose(name, regions):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from lmguide.runs.runtime import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"landmarks={name}"])
    spec = instantiate(cfg.landmarks)
    assert isinstance(spec, MaskSpec) and spec.regions == regions and not spec.soft
    assert set(cfg.landmarks) == {"_target_", "regions", "radius", "soft"}
    first_line = (CONF_DIR / "landmarks" / f"{name}.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# ")
