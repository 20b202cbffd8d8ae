"""The standard test sets' layouts (Celeb-DF v1, UADFV, DFDCP, DF40, DeepfakeBench's JSON) on small
fake trees with each data set's published structure, filled with demo media."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmguide.data.layouts.base import LayoutError, hash_split
from lmguide.data.layouts.celebdf import CelebDFv1Source
from lmguide.data.layouts.uadfv import UADFVSource
from tests.conftest import table

# --------------------------------------------------------------------------- Celeb-DF v1


def make_celebdf_v1(root: Path, touch, test_lines: list[str] | None = None) -> Path:
    touch(
        root,
        "Celeb-real/id0_0000.mp4",
        "Celeb-real/id1_0003.mp4",
        "YouTube-real/00001.mp4",
        "YouTube-real/00057.mp4",
        "Celeb-synthesis/id0_id1_0000.mp4",
        "Celeb-synthesis/id1_id0_0003.mp4",
    )
    lines = test_lines or [
        "1 YouTube-real/00057.mp4",
        "1 Celeb-real/id1_0003.mp4",
        "0 Celeb-synthesis/id1_id0_0003.mp4",
    ]
    (root / "List_of_testing_videos.txt").write_text("\n".join(lines) + "\n")
    return root


def test_celebdf_v1_is_the_v2_indexer_under_its_own_name(tmp_path, touch):
    root = make_celebdf_v1(tmp_path / "Celeb-DF", touch)
    src = CelebDFv1Source(root=str(root), val_fraction=0.5)
    assert src.name == "celebdf_v1"
    got = table(src.items())
    assert len(got) == 6
    assert got["YouTube-real/00057.mp4"] == (0, "test", "YouTube-real/00057")
    assert got["Celeb-synthesis/id1_id0_0003.mp4"] == (1, "test", "Celeb-synthesis/id1_id0_0003")
    id0 = {got[k][1] for k in ("Celeb-real/id0_0000.mp4", "Celeb-synthesis/id0_id1_0000.mp4")}
    assert id0 == {hash_split("celeb:id0", {"val": 0.5})}


@pytest.mark.parametrize(
    "line,match",
    [
        ("0 Celeb-real/id0_0000.mp4", "label 0 means fake .* but Celeb-real/ holds real"),
        ("1 ../Celeb-real/id0_0000.mp4", "escapes data.root"),
        ("1 Celeb-real/id9_0009.mp4", "does not exist"),
    ],
)
def test_celebdf_v1_refuses_bad_test_list_lines(tmp_path, touch, line, match):
    root = make_celebdf_v1(tmp_path / "Celeb-DF", touch, ["1 YouTube-real/00057.mp4", line])
    with pytest.raises(LayoutError, match=match) as err:
        CelebDFv1Source(root=str(root)).items()
    assert f"List_of_testing_videos.txt:2 ({line!r})" in str(err.value) and "\n" not in str(err.value)


def test_celebdf_v1_refuses_a_missing_test_list_and_names_itself(tmp_path, touch):
    root = make_celebdf_v1(tmp_path / "Celeb-DF", touch)
    (root / "List_of_testing_videos.txt").unlink()
    with pytest.raises(LayoutError, match="^celebdf_v1: test list .*List_of_testing_videos.txt is missing"):
        CelebDFv1Source(root=str(root)).items()
    touch(root, "Celeb-fake/id0_id1_0001.mp4")
    with pytest.raises(LayoutError, match="^celebdf_v1: video .*Celeb-fake/id0_id1_0001.mp4 is not directly"):
        CelebDFv1Source(root=str(root), test_list=None).items()


# --------------------------------------------------------------------------- UADFV


def make_uadfv(root: Path, touch, n: int = 12) -> Path:
    touch(root, *(f"real/{i:04d}.mp4" for i in range(n)), *(f"fake/{i:04d}_fake.mp4" for i in range(n)))
    return root


def test_uadfv_keeps_a_real_video_and_its_fake_in_one_split(tmp_path, touch):
    root = make_uadfv(tmp_path / "UADFV", touch, n=40)
    fr = {"val": 0.2, "test": 0.3}
    got = table(UADFVSource(root=str(root), split_fractions=fr).items())
    assert len(got) == 80
    assert got["real/0007.mp4"] == (0, hash_split("uadfv:0007", fr), "real/0007")
    assert got["fake/0007_fake.mp4"] == (1, hash_split("uadfv:0007", fr), "fake/0007_fake")
    assert all(got[f"real/{i:04d}.mp4"][1] == got[f"fake/{i:04d}_fake.mp4"][1] for i in range(40))
    assert {v[1] for v in got.values()} == {"train", "val", "test"}


def test_uadfv_refuses_missing_folders_odd_fakes_and_videos_without_a_label(tmp_path, touch):
    root = make_uadfv(tmp_path / "UADFV", touch, n=2)
    with pytest.raises(LayoutError, match="data.root is not set"):
        UADFVSource(root=None).items()
    touch(root, "fake/0001.mp4")
    with pytest.raises(LayoutError, match="fake video .*fake/0001.mp4 is not named <id>_fake.mp4"):
        UADFVSource(root=str(root)).items()
    (root / "fake/0001.mp4").unlink()
    touch(root, "other/0003.mp4", "real/frames/0000.mp4")
    with pytest.raises(LayoutError) as err:
        UADFVSource(root=str(root)).items()
    assert str(err.value) == (
        f"uadfv: video {root / 'other/0003.mp4'} (and 1 more) is not directly in real/ or fake/, so it has "
        "no label; move it or remove it"
    )
    for f in (root / "real").rglob("*.mp4"):
        f.unlink()
    (root / "real/frames").rmdir()
    (root / "real").rmdir()
    with pytest.raises(LayoutError, match="expected folder .*UADFV/real is missing"):
        UADFVSource(root=str(root)).items()


# --------------------------------------------------------------------------- the Hydra configs


def _celebdf_v1_tree(root: Path, touch) -> list[str]:
    make_celebdf_v1(root, touch)
    return []


def _uadfv_tree(root: Path, touch) -> list[str]:
    make_uadfv(root, touch)
    return []


#: conf/data/<name>.yaml → builds its fake tree under root and returns extra overrides; the test in
#: tests/test_layouts.py composes every conf/data/*.yaml and indexes the tree
STANDARD_TREES = {
    "celebdf_v1": _celebdf_v1_tree,
    "uadfv": _uadfv_tree,
}
