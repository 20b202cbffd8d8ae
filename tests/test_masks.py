"""Masks land on the right pixels for known landmarks."""

import numpy as np
import pytest

from lmguide.data.masks import REGIONS, MaskSpec, draw_mask


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
