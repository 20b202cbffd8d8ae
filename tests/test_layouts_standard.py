"""The standard test sets' layouts (Celeb-DF v1, UADFV, DFDCP, DF40, DeepfakeBench's JSON) on small
fake trees with each data set's published structure, filled with demo media."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lmguide.data.layouts.base import LayoutError, hash_split
from lmguide.data.layouts.celebdf import CelebDFv1Source
from lmguide.data.layouts.deepfakebench import DeepfakeBenchSource
from lmguide.data.layouts.df40 import DF40Source
from lmguide.data.layouts.dfdcp import DFDCPSource
from lmguide.data.layouts.uadfv import UADFVSource
from lmguide.runs.runtime import CONF_DIR
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
    src = CelebDFv1Source(root=str(root), split_fractions={"val": 0.5})
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


# --------------------------------------------------------------------------- DFDC preview

DFDCP_META = {
    "original_videos/1061268/1061268_A_001.mp4": {"label": "real", "set": "train", "target_id": "1061268"},
    "original_videos/1061268/1061268_B_002.mp4": {"label": "real", "set": "train", "target_id": "1061268"},
    "method_A/1061268/1061268_A/1255229_1061268_A_001.mp4": {
        "label": "fake",
        "set": "train",
        "target_id": "1061268",
    },
    "original_videos/2000001/2000001_A_001.mp4": {"label": "real", "set": "test", "target_id": "2000001"},
    "method_B/2000001/2000001_A/1061268_2000001_A_001.mp4": {"label": "fake", "set": "test"},
}


def make_dfdcp(root: Path, touch, meta: dict | None = None) -> Path:
    meta = DFDCP_META if meta is None else meta
    touch(root, *meta)
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _edit_dfdcp(root: Path, fn) -> Path:
    path = root / "dataset.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))
    return path


def test_dfdcp_uses_the_set_field_and_holds_out_identities_for_val(tmp_path, touch):
    root = make_dfdcp(tmp_path / "DFDCP", touch)
    items = DFDCPSource(root=str(root), split_fractions={"val": 0.5}).items()
    got = table(items)
    train_split = hash_split("id:1061268", {"val": 0.5})
    assert got == {
        "method_A/1061268/1061268_A/1255229_1061268_A_001.mp4": (
            1,
            train_split,
            "method_A/1061268/1061268_A/1255229_1061268_A_001",
        ),
        "method_B/2000001/2000001_A/1061268_2000001_A_001.mp4": (
            1,
            "test",
            "method_B/2000001/2000001_A/1061268_2000001_A_001",
        ),
        "original_videos/1061268/1061268_A_001.mp4": (
            0,
            train_split,
            "original_videos/1061268/1061268_A_001",
        ),
        "original_videos/1061268/1061268_B_002.mp4": (
            0,
            train_split,
            "original_videos/1061268/1061268_B_002",
        ),
        "original_videos/2000001/2000001_A_001.mp4": (0, "test", "original_videos/2000001/2000001_A_001"),
    }
    assert {it.key.split("/")[0]: it.origin for it in items} == {
        "original_videos": "original_videos",
        "method_A": "method_A",
        "method_B": "method_B",
    }


def test_dfdcp_identity_falls_back_to_the_folder_and_splits_many_identities(tmp_path, touch):
    meta = {
        f"original_videos/{i:07d}/{i:07d}_A_001.mp4": {"label": "real", "set": "train"} for i in range(60)
    } | {
        f"method_A/{i:07d}/{i:07d}_A/9_{i:07d}_A_001.mp4": {"label": "FAKE", "set": "train"}
        for i in range(60)
    }
    root = make_dfdcp(tmp_path / "DFDCP", touch, meta)
    got = table(DFDCPSource(root=str(root), split_fractions={"val": 0.3}).items())
    for i in range(60):
        want = hash_split(f"id:{i:07d}", {"val": 0.3})
        assert got[f"original_videos/{i:07d}/{i:07d}_A_001.mp4"][1] == want
        assert got[f"method_A/{i:07d}/{i:07d}_A/9_{i:07d}_A_001.mp4"][1] == want
    assert {v[1] for v in got.values()} == {"train", "val"}


@pytest.mark.parametrize(
    "record,shown",
    [
        ({"label": "REAL-ish", "set": "train"}, "label 'REAL-ish' is not real or fake"),
        ({"label": 1, "set": "train"}, "label 1 is not real or fake"),
        ({"set": "train"}, "label None is not real or fake"),
        ({"label": "real", "set": "validation"}, "set 'validation' is not one of \\('train', 'test'\\)"),
        ({"label": "real", "set": "train", "target_id": [1]}, "target_id must be a string or a number"),
        ("real", "expected an object with label and set"),
    ],
)
def test_dfdcp_refuses_labels_and_sets_of_other_kinds(tmp_path, touch, record, shown):
    root = make_dfdcp(tmp_path / "DFDCP", touch)
    rel = "original_videos/1061268/1061268_A_001.mp4"
    meta = _edit_dfdcp(root, lambda m: m.update({rel: record}))
    with pytest.raises(LayoutError, match=f"^{meta}: entry '{rel}': {shown}"):
        DFDCPSource(root=str(root)).items()


def test_dfdcp_refuses_missing_metadata_escapes_and_unlisted_videos(tmp_path, touch, caplog):
    root = make_dfdcp(tmp_path / "DFDCP", touch)
    meta = root / "dataset.json"
    _edit_dfdcp(root, lambda m: m.update({"../elsewhere/x.mp4": {"label": "fake", "set": "test"}}))
    with pytest.raises(LayoutError, match="entry '../elsewhere/x.mp4': path ../elsewhere/x.mp4 escapes"):
        DFDCPSource(root=str(root)).items()
    _edit_dfdcp(root, lambda m: m.pop("../elsewhere/x.mp4"))
    _edit_dfdcp(root, lambda m: m.update({"/abs/x.mp4": {"label": "fake", "set": "test"}}))
    with pytest.raises(LayoutError, match="path /abs/x.mp4 is absolute"):
        DFDCPSource(root=str(root)).items()
    _edit_dfdcp(root, lambda m: m.pop("/abs/x.mp4"))
    gone = [f"method_B/3/3_A/{i}_3_A_001.mp4" for i in range(7)]
    _edit_dfdcp(root, lambda m: m.update({g: {"label": "fake", "set": "test"} for g in gone}))
    with pytest.raises(LayoutError) as err:
        DFDCPSource(root=str(root)).items()
    assert str(err.value) == (
        f"7 of 12 files listed in {meta} do not exist: {', '.join(gone[:5])}, … (first 5 shown); restore "
        "them, or set data.source.allow_missing=true"
    )
    with caplog.at_level(logging.WARNING, logger="lmguide.data.layouts.dfdcp"):
        assert len(DFDCPSource(root=str(root), allow_missing=True).items()) == 5
    assert "7 of 12 files listed" in caplog.text and "left out" in caplog.text
    _edit_dfdcp(root, lambda m: [m.pop(g) for g in gone])
    touch(root, "method_A/1061268/1061268_A/7_1061268_A_009.mp4")
    with pytest.raises(
        LayoutError, match="7_1061268_A_009.mp4 is not listed in .*dataset.json, so it has no"
    ):
        DFDCPSource(root=str(root)).items()
    meta.unlink()
    with pytest.raises(LayoutError, match="metadata file .*dataset.json is missing; data.root must be"):
        DFDCPSource(root=str(root)).items()
    meta.write_text("{not json")
    with pytest.raises(LayoutError, match="dataset.json: cannot read JSON"):
        DFDCPSource(root=str(root)).items()


# --------------------------------------------------------------------------- DF40


def make_df40(root: Path, touch) -> Path:
    touch(
        root,
        "fsgan/ff/frames/000_003/000.png",
        "fsgan/ff/frames/000_003/001.png",
        "fsgan/ff/frames/071_054/000.png",
        "fsgan/ff/masks/000_003/000.png",  # derived beside frames/: not read
        "fsgan/cdf/frames/id0_id16_0000/000.png",
        "simswap/ff/frames/000_003/000.png",
        "heygen/ff/videos/clip1.mp4",  # no frames/: the videos are read
        "heygen/ff/frames_wocropface/clip1/000.png",  # derived: never read
        "MidJourney/fake/0001.png",
        "MidJourney/real/0001.png",
    )
    (root / "fsgan/ff/landmarks/000_003").mkdir(parents=True)
    (root / "fsgan/ff/landmarks/000_003/000.npy").write_bytes(b"\0")
    return root


def make_df40_reals(base: Path, touch) -> dict[str, str]:
    ff = base / "FaceForensics++/original_sequences/youtube/c23"
    cdf = base / "Celeb-DF-v2/Celeb-real"
    touch(ff, "frames/000/000.png", "frames/000/001.png", "frames/071/000.png", "videos/000.mp4")
    touch(cdf, "frames/id0_0000/000.png")
    return {"ff": str(ff), "cdf": str(cdf)}


def test_df40_reads_methods_domains_and_reals(tmp_path, touch):
    root = make_df40(tmp_path / "DF40", touch)
    real = make_df40_reals(tmp_path, touch)
    items = DF40Source(root=str(root), real=real).items()
    got = {it.key: (it.label, it.split, it.video_id, it.origin.split(" ")[0]) for it in items}
    assert got == {
        "fsgan/ff/frames/000_003/000.png": (1, "test", "fsgan/ff/000_003", "fsgan"),
        "fsgan/ff/frames/000_003/001.png": (1, "test", "fsgan/ff/000_003", "fsgan"),
        "fsgan/ff/frames/071_054/000.png": (1, "test", "fsgan/ff/071_054", "fsgan"),
        "fsgan/cdf/frames/id0_id16_0000/000.png": (1, "test", "fsgan/cdf/id0_id16_0000", "fsgan"),
        "simswap/ff/frames/000_003/000.png": (1, "test", "simswap/ff/000_003", "simswap"),
        "heygen/ff/videos/clip1.mp4": (1, "test", "heygen/ff/videos/clip1", "heygen"),
        "MidJourney/fake/0001.png": (1, "test", None, "MidJourney"),
        "MidJourney/real/0001.png": (0, "test", None, "MidJourney"),
        "real_ff/frames/000/000.png": (0, "test", "real/ff/000", "real-ff"),
        "real_ff/frames/000/001.png": (0, "test", "real/ff/000", "real-ff"),
        "real_ff/frames/071/000.png": (0, "test", "real/ff/071", "real-ff"),
        "real_cdf/frames/id0_0000/000.png": (0, "test", "real/cdf/id0_0000", "real-cdf"),
    }
    assert all(it.path.is_file() for it in items)


def test_df40_reals_inside_its_folder_are_no_method(tmp_path, touch):
    root = make_df40(tmp_path / "DF40", touch)
    touch(root, "reals/ff/frames/000/000.png")
    got = table(DF40Source(root=str(root), real={"ff": "reals/ff"}, domains=["ff"]).items())
    assert got["reals/ff/frames/000/000.png"] == (0, "test", "real/ff/000")
    # without real.ff the folder is one more method: its files are fakes
    assert table(DF40Source(root=str(root), domains=["ff"]).items())["reals/ff/frames/000/000.png"][0] == 1


def test_df40_selects_methods_and_domains_and_hashes_video_names(tmp_path, touch, caplog):
    root = make_df40(tmp_path / "DF40", touch)
    real = make_df40_reals(tmp_path, touch)
    only = DF40Source(root=str(root), methods=["fsgan"], domains=["cdf"], real=real).items()
    assert sorted(it.video_id for it in only) == ["fsgan/cdf/id0_id16_0000", "real/cdf/id0_0000"]
    fr = {"val": 0.3, "test": 0.3}
    src = DF40Source(
        root=str(root), methods=["fsgan", "simswap"], domains=["ff"], split=None, split_fractions=fr
    )
    with caplog.at_level(logging.WARNING, logger="lmguide.data.layouts.df40"):
        got = table(src.items())
    assert "no reals for the ff domain (data.source.real.ff is null)" in caplog.text
    want = hash_split("df40:000_003", fr)
    assert got["fsgan/ff/frames/000_003/000.png"][1] == got["simswap/ff/frames/000_003/000.png"][1] == want
    assert {v[0] for v in got.values()} == {1}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            {"methods": ["fsgann"]},
            "methods \\['fsgann'\\] are not method folders of .*; choose from \\['MidJ",
        ),
        ({"methods": ["../DF40/fsgan"]}, "methods \\['../DF40/fsgan'\\] are not method folders"),
        (
            {"domains": ["ff", "dfdc"]},
            "domains \\['ff', 'dfdc'\\] must be a non-empty list of \\['ff', 'cdf'\\]",
        ),
        (
            {"real": {"ff": "../FaceForensics++/original_sequences/youtube/c23"}},
            "real.ff .* escapes data.root",
        ),
        ({"real": {"ff": "ff_real"}}, "real.ff .*DF40/ff_real is not a folder"),
        ({"real": {"dfd": "x"}}, "real has unknown domain\\(s\\) \\['dfd'\\]"),
        ({"split": "testing"}, "split 'testing' is not one of"),
        (
            {"methods": ["MidJourney"], "domains": ["ff"], "split": None, "split_fractions": {"val": 1}},
            "val \\+ test < 1",
        ),
    ],
)
def test_df40_refuses_bad_options(tmp_path, touch, kwargs, match):
    root = make_df40(tmp_path / "DF40", touch)
    with pytest.raises(LayoutError, match=match):
        DF40Source(root=str(root), **kwargs).items()


@pytest.mark.parametrize(
    "extra,match",
    [
        (
            "fsgan/ff2/frames/000_003/000.png",
            "fsgan/ff2/frames/000_003/000.png is not under one of \\['ff', 'cdf'\\]",
        ),
        ("MidJourney/fakes/0002.png", "MidJourney/fakes/0002.png is not under one of \\['fake', 'real'\\]"),
        ("stargan/0001.png", "stargan must hold ff/ and/or cdf/ .* it holds neither"),
        ("stray.mp4", "DF40/stray.mp4 is not under one of"),
        ("e4e/ff/frames/x/000.png", None),  # with fake/ too: both kinds
    ],
)
def test_df40_refuses_media_without_a_label(tmp_path, touch, extra, match):
    root = make_df40(tmp_path / "DF40", touch)
    touch(root, extra)
    if match is None:
        touch(root, "e4e/fake/0001.png")
        match = "e4e must hold ff/ and/or cdf/ .* it holds \\['ff', 'fake'\\]"
    with pytest.raises(LayoutError, match=match) as err:
        DF40Source(root=str(root)).items()
    assert "\n" not in str(err.value)


def test_df40_refuses_a_method_folder_of_no_known_kind_and_an_empty_one(tmp_path, touch):
    root = make_df40(tmp_path / "DF40", touch)
    (root / "VQGAN/test").mkdir(parents=True)
    with pytest.raises(LayoutError, match="VQGAN must hold ff/ and/or cdf/ .* it holds neither"):
        DF40Source(root=str(root)).items()
    (root / "VQGAN/test").rmdir()
    (root / "VQGAN/ff/frames").mkdir(parents=True)
    with pytest.raises(LayoutError, match="method folder .*VQGAN holds no images or videos"):
        DF40Source(root=str(root)).items()
    with pytest.raises(
        LayoutError, match="method heygen has none of domains \\['cdf'\\] \\(it has \\['ff'\\]\\)"
    ):
        DF40Source(root=str(root), methods=["fsgan", "heygen"], domains=["cdf"]).items()


# --------------------------------------------------------------------------- DeepfakeBench's JSON


def _video(label: str, folder: str, video: str, n: int = 2, sep: str = "/") -> dict:
    return {
        "label": label,
        "frames": [sep.join([*folder.split("/"), "frames", video, f"{i:03d}.png"]) for i in range(n)],
    }


def make_dfb_celebdf(rgb: Path, touch) -> Path:
    """DeepfakeBench's Celeb-DF-v2.json as rearrange.py writes it: every video in train, the test list's
    in test and val too; frames under rgb/ (the released files use '\\' separators)."""
    real = {v: _video("CelebDFv2_real", "Celeb-DF-v2/Celeb-real", v) for v in ("id0_0000", "id1_0001")}
    real["00170"] = _video("CelebDFv2_real", "Celeb-DF-v2/YouTube-real", "00170", sep="\\")
    fake = {
        v: _video("CelebDFv2_fake", "Celeb-DF-v2/Celeb-synthesis", v)
        for v in ("id0_id1_0000", "id1_id0_0001")
    }
    test = {"real": {"00170": real["00170"]}, "fake": {"id1_id0_0001": fake["id1_id0_0001"]}}
    data = {
        "Celeb-DF-v2": {
            "CelebDFv2_real": {"train": real, "val": test["real"], "test": test["real"]},
            "CelebDFv2_fake": {"train": fake, "val": test["fake"], "test": test["fake"]},
        }
    }
    for group in data["Celeb-DF-v2"].values():
        for rec in group["train"].values():
            touch(rgb, *(f.replace("\\", "/") for f in rec["frames"]))
    path = rgb.parent / "dataset_json/Celeb-DF-v2.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _rewrite(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_deepfakebench_json_test_first_val_from_train_frames_grouped_by_video(tmp_path, touch, caplog):
    rgb = tmp_path / "DeepfakeBench/datasets/rgb"
    file = make_dfb_celebdf(rgb, touch)
    with caplog.at_level(logging.WARNING, logger="lmguide.data.layouts.deepfakebench"):
        items = DeepfakeBenchSource(file=str(file), root=str(rgb), split_fractions={"val": 0.5}).items()
    assert (
        "2 videos are listed in more than one of the JSON splits read; each is used once, in the first of "
        "test, train" in caplog.text
    )
    got = table(items)
    assert len(got) == 10
    fr = {"val": 0.5}
    assert got["Celeb-DF-v2/YouTube-real/frames/00170/001.png"] == (0, "test", "CelebDFv2_real/00170")
    assert got["Celeb-DF-v2/Celeb-synthesis/frames/id1_id0_0001/000.png"] == (
        1,
        "test",
        "CelebDFv2_fake/id1_id0_0001",
    )
    assert got["Celeb-DF-v2/Celeb-real/frames/id0_0000/001.png"] == (
        0,
        hash_split("dfb:id0_0000", fr),
        "CelebDFv2_real/id0_0000",
    )
    assert got["Celeb-DF-v2/Celeb-synthesis/frames/id0_id1_0000/000.png"][1] == hash_split(
        "dfb:id0_id1_0000", fr
    )
    assert {it.origin for it in items} == {"CelebDFv2_real", "CelebDFv2_fake"}
    # the JSON's own val: Celeb-DF's copies test, so test keeps those videos and val has none left
    with_val = DeepfakeBenchSource(
        file=str(file), root=str(rgb), splits={"train": "train", "val": "val", "test": "test"}
    )
    assert {it.split for it in with_val.items()} == {"train", "test"}
    only_test = DeepfakeBenchSource(
        file="../../dataset_json/Celeb-DF-v2.json", root=str(rgb), splits={"test": "test"}
    )
    with pytest.raises(LayoutError, match="file ../../dataset_json/Celeb-DF-v2.json escapes data.root"):
        only_test.items()
    only_test.file = str(file)
    assert {it.split for it in only_test.items()} == {"test"} and len(only_test.items()) == 4


def test_deepfakebench_compression_level_and_repeated_reals(tmp_path, touch, caplog):
    rgb = tmp_path / "rgb"
    base = "FaceForensics++/original_sequences/youtube"
    fake = "FaceForensics++/manipulated_sequences/Deepfakes"
    data = {
        "FF-DF": {
            "FF-real": {
                "train": {
                    c: {"000": _video("FF-real", f"{base}/{c}", "000", sep="\\")} for c in ("c23", "c40")
                },
                "test": {c: {"071": _video("FF-real", f"{base}/{c}", "071")} for c in ("c23", "c40")},
            },
            "FF-DF": {
                "train": {c: {"000_003": _video("FF-DF", f"{fake}/{c}", "000_003")} for c in ("c23", "c40")},
                "test": {c: {} for c in ("c23", "c40")},
            },
            "FF-real-again": {"train": {"c40": {"000": _video("FF-real", f"{base}/c40", "000")}}, "test": {}},
        }
    }
    for c in ("c23", "c40"):
        touch(rgb, *(f"{base}/{c}/frames/{v}/{i:03d}.png" for v in ("000", "071") for i in range(2)))
        touch(rgb, *(f"{fake}/{c}/frames/000_003/{i:03d}.png" for i in range(2)))
    file = rgb / "FF-DF.json"
    file.write_text(json.dumps(data))
    with pytest.raises(
        LayoutError, match="FF-DF/FF-real-again/train: no 'c23' videos \\(it has \\['c40'\\]\\); set"
    ):
        DeepfakeBenchSource(file="FF-DF.json", root=str(rgb)).items()
    with caplog.at_level(logging.WARNING, logger="lmguide.data.layouts.deepfakebench"):
        items = DeepfakeBenchSource(file="FF-DF.json", root=str(rgb), compression="c40").items()
    assert "2 frames are listed under more than one video; each is used once" in caplog.text
    assert all("/c40/" in it.key for it in items) and len(items) == 6
    assert {it.video_id for it in items} == {"FF-DF/000_003", "FF-real/000", "FF-real/071"}


@pytest.mark.parametrize(
    "edit,match",
    [
        (
            lambda d: d["Celeb-DF-v2"]["CelebDFv2_real"]["train"]["id0_0000"].update(label="CelebDFv2_maybe"),
            "train: video 'id0_0000': label 'CelebDFv2_maybe' is neither one of DeepfakeBench's nor named "
            "\\*_real/\\*_fake; map it with data.source.labels=\\{CelebDFv2_maybe: 0\\} \\(real\\) or 1",
        ),
        (
            lambda d: d["Celeb-DF-v2"]["CelebDFv2_real"]["train"]["id0_0000"].pop("label"),
            "label None is not a label",
        ),
        (
            lambda d: d["Celeb-DF-v2"]["CelebDFv2_real"]["train"]["id0_0000"]["frames"].append(
                "../../x/000.png"
            ),
            "CelebDFv2_real/train: video 'id0_0000': frame ../../x/000.png escapes data.root",
        ),
        (
            lambda d: d["Celeb-DF-v2"]["CelebDFv2_real"]["train"]["id0_0000"]["frames"].append(
                "/data/x/000.png"
            ),
            "video 'id0_0000': frame /data/x/000.png is absolute; .* \\(allow_absolute=true\\)",
        ),
        (
            lambda d: d["Celeb-DF-v2"]["CelebDFv2_real"]["train"]["id0_0000"]["frames"].append("a/b.mp4"),
            "frame 'a/b.mp4' is not an image",
        ),
        (
            lambda d: d["Celeb-DF-v2"]["CelebDFv2_real"]["train"]["id0_0000"].update(frames="000.png"),
            "'frames' must be a list of frame paths",
        ),
        (
            lambda d: d["Celeb-DF-v2"]["CelebDFv2_fake"].pop("test"),
            "CelebDFv2_fake has no 'test' split \\(it has",
        ),
        (
            lambda d: d.update({"UADFV": {}}),
            "holds several data sets; set data.source.dataset to one of \\['Cel",
        ),
        (
            lambda d: d["Celeb-DF-v2"]["CelebDFv2_fake"]["train"]["id0_id1_0000"].update(
                frames=["Celeb-DF-v2/Celeb-real/frames/id0_0000/000.png"]
            ),
            "CelebDFv2_real/train: video 'id0_0000': frame 'Celeb-DF-v2/Celeb-real/frames/id0_0000/000.png' "
            "is labelled 0 here but 1 in .*CelebDFv2_fake/train: video 'id0_id1_0000'; a frame needs one",
        ),
    ],
)
def test_deepfakebench_refuses_bad_records(tmp_path, touch, edit, match):
    rgb = tmp_path / "rgb"
    file = make_dfb_celebdf(rgb, touch)
    _rewrite(file, edit)
    with pytest.raises(LayoutError, match=match) as err:
        DeepfakeBenchSource(file=str(file), root=str(rgb)).items()
    assert str(file) in str(err.value) and "\n" not in str(err.value)


def test_deepfakebench_refuses_missing_json_frames_and_bad_options(tmp_path, touch, caplog):
    rgb = tmp_path / "rgb"
    file = make_dfb_celebdf(rgb, touch)
    with pytest.raises(LayoutError, match="data.source.file is not set"):
        DeepfakeBenchSource(file="???", root=str(rgb)).items()
    with pytest.raises(LayoutError, match="JSON file .*UADFV.json does not exist"):
        DeepfakeBenchSource(file="UADFV.json", root=str(rgb)).items()
    with pytest.raises(LayoutError, match="has no data set 'Celeb-DF-v1'; set data.source.dataset"):
        DeepfakeBenchSource(file=str(file), root=str(rgb), dataset="Celeb-DF-v1").items()
    for kwargs, match in [
        ({"splits": {"training": "train"}}, "must map some of"),
        ({"labels": {"X": 2}}, "labels.X must be 0 \\(real\\) or 1 \\(fake\\), got 2"),
        ({"compression": "c30"}, "compression 'c30'"),
    ]:
        with pytest.raises(LayoutError, match=match):
            DeepfakeBenchSource(file=str(file), root=str(rgb), **kwargs).items()
    # a name of its own, mapped
    _rewrite(file, lambda d: d["Celeb-DF-v2"]["CelebDFv2_real"]["train"]["id0_0000"].update(label="pristine"))
    mapped = DeepfakeBenchSource(file=str(file), root=str(rgb), labels={"pristine": 0}).items()
    assert {it.label for it in mapped if it.video_id == "CelebDFv2_real/id0_0000"} == {0}
    for f in (rgb / "Celeb-DF-v2/Celeb-real/frames/id0_0000").iterdir():
        f.unlink()
    with pytest.raises(LayoutError) as err:
        DeepfakeBenchSource(file=str(file), root=str(rgb), labels={"pristine": 0}).items()
    assert str(err.value) == (
        f"2 of 10 files listed in {file} do not exist: Celeb-DF-v2/Celeb-real/frames/id0_0000/000.png, "
        "Celeb-DF-v2/Celeb-real/frames/id0_0000/001.png; restore them, or set data.source.allow_missing=true"
    )
    with caplog.at_level(logging.WARNING, logger="lmguide.data.layouts.deepfakebench"):
        kept = DeepfakeBenchSource(file=str(file), root=str(rgb), labels={"pristine": 0}, allow_missing=True)
        assert len(kept.items()) == 8
    assert "2 of 10 files listed" in caplog.text
    file.write_text("{")
    with pytest.raises(LayoutError, match="Celeb-DF-v2.json: cannot read JSON"):
        DeepfakeBenchSource(file=str(file), root=str(rgb)).items()


def test_deepfakebench_config_maps_label_names_and_reads_one_split(tmp_path, touch):
    """The overrides the docs give: a label name of one's own, and the test split alone."""
    rgb = tmp_path / "rgb"
    file = make_dfb_celebdf(rgb, touch)
    _rewrite(file, lambda d: d["Celeb-DF-v2"]["CelebDFv2_real"]["test"]["00170"].update(label="pristine"))
    overrides = ["data.source.labels={pristine:0}", "data.source.splits.train=null"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["data=deepfakebench", f"data.root={rgb}", f"data.source.file={file}", *overrides],
        )
    items = instantiate(cfg.data.source).items()
    assert {(it.video_id, it.label, it.split) for it in items} == {
        ("CelebDFv2_real/00170", 0, "test"),
        ("CelebDFv2_fake/id1_id0_0001", 1, "test"),
    }


# --------------------------------------------------------------------------- the Hydra configs


def _celebdf_v1_tree(root: Path, touch) -> list[str]:
    make_celebdf_v1(root, touch)
    return []


def _uadfv_tree(root: Path, touch) -> list[str]:
    make_uadfv(root, touch)
    return []


def _dfdcp_tree(root: Path, touch) -> list[str]:
    make_dfdcp(root, touch)
    return []


def _df40_tree(root: Path, touch) -> list[str]:
    make_df40(root, touch)
    return []


def _deepfakebench_tree(root: Path, touch) -> list[str]:
    return [f"data.source.file={make_dfb_celebdf(root, touch)}"]


#: conf/data/<name>.yaml → builds its fake tree under root and returns extra overrides; the test in
#: tests/test_layouts.py composes every conf/data/*.yaml and indexes the tree
STANDARD_TREES = {
    "celebdf_v1": _celebdf_v1_tree,
    "uadfv": _uadfv_tree,
    "dfdcp": _dfdcp_tree,
    "df40": _df40_tree,
    "deepfakebench": _deepfakebench_tree,
}


def test_every_standard_layout_has_a_config_and_a_tree():
    names = {"celebdf_v1", "dfdcp", "uadfv", "df40", "deepfakebench"}
    assert set(STANDARD_TREES) == names
    assert all((CONF_DIR / "data" / f"{n}.yaml").is_file() for n in names)
