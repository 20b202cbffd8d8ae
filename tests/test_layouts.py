"""Dataset layout indexers on small fake trees with the real folder structure of each data set."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lmguide.data.layouts.base import LayoutError, SourceItem, hash_split
from lmguide.data.layouts.celebdf import CelebDFSource
from lmguide.data.layouts.csv import CSVSource
from lmguide.data.layouts.dfdc import DFDCSource
from lmguide.data.layouts.ffpp import FFPPSource
from lmguide.data.layouts.folder import FolderSource
from lmguide.runs.runtime import CONF_DIR
from tests.conftest import table

# --------------------------------------------------------------------------- hash_split


def test_hash_split_is_stable_and_respects_fractions():
    fr = {"val": 0.14, "test": 0.14}
    groups = [f"g{i}" for i in range(2000)]
    first = {g: hash_split(g, fr) for g in groups}
    assert {g: hash_split(g, dict(fr)) for g in reversed(groups)} == first  # order/other items don't matter
    counts = Counter(first.values())
    assert abs(counts["val"] / 2000 - 0.14) < 0.03 and abs(counts["test"] / 2000 - 0.14) < 0.03
    assert hash_split("g1", {"val": 0.0, "test": 0.0}) == "train"
    assert any(hash_split(g, fr, seed=1) != first[g] for g in groups[:50])  # the seed reshuffles
    with pytest.raises(LayoutError, match="val \\+ test < 1"):
        hash_split("g", {"val": 0.6, "test": 0.5})


# --------------------------------------------------------------------------- FaceForensics++

FF_REAL = ["000", "003", "054", "071", "999"]
FF_FAKE = ["000_003", "003_000", "054_071", "071_054"]
FF_MANIPS = ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"]


def make_ffpp(root: Path, touch, comp: str = "c23", manips=FF_MANIPS) -> Path:
    touch(root, *(f"original_sequences/youtube/{comp}/videos/{v}.mp4" for v in FF_REAL))
    for m in manips:
        touch(root, *(f"manipulated_sequences/{m}/{comp}/videos/{v}.mp4" for v in FF_FAKE))
    return root


def write_ff_splits(
    folder: Path, train=(("000", "003"),), val=(("071", "054"),), test=(("999", "998"),)
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train", train), ("val", val), ("test", test)):
        (folder / f"{name}.json").write_text(json.dumps([list(p) for p in pairs]))
    return folder


def test_ffpp_official_split(tmp_path, touch):
    root = make_ffpp(tmp_path / "ff", touch)
    write_ff_splits(root / "splits")
    got = table(FFPPSource(root=str(root), split_dir="splits").items())
    assert len(got) == 5 + 4 * 4
    assert got["original_sequences/youtube/c23/videos/071.mp4"] == (0, "val", "youtube/071")
    assert got["original_sequences/youtube/c23/videos/999.mp4"] == (0, "test", "youtube/999")
    assert got["original_sequences/youtube/c23/videos/000.mp4"] == (0, "train", "youtube/000")
    # a fake is in the split of its pair, in either order
    assert got["manipulated_sequences/Deepfakes/c23/videos/000_003.mp4"] == (1, "train", "Deepfakes/000_003")
    assert got["manipulated_sequences/Deepfakes/c23/videos/003_000.mp4"] == (1, "train", "Deepfakes/003_000")
    assert got["manipulated_sequences/Face2Face/c23/videos/054_071.mp4"] == (1, "val", "Face2Face/054_071")
    # the same pair in two manipulations: two different clips
    vids = [v for _, _, v in got.values()]
    assert "Deepfakes/000_003" in vids and "Face2Face/000_003" in vids and len(set(vids)) == len(vids)


def test_ffpp_split_dir_absolute_and_compression(tmp_path, touch):
    root = make_ffpp(tmp_path / "ff", touch, comp="c40", manips=["FaceSwap"])
    splits = write_ff_splits(tmp_path / "elsewhere")
    items = FFPPSource(
        root=str(root), compression="c40", manipulations=["FaceSwap"], split_dir=str(splits)
    ).items()
    assert {it.video_id.split("/")[0] for it in items} == {"youtube", "FaceSwap"}
    assert all("/c40/" in it.key for it in items)


def test_ffpp_hash_split_keeps_pairs_together(tmp_path, touch, caplog):
    root = tmp_path / "ff"
    pairs = [(f"{2 * i:03d}", f"{2 * i + 1:03d}") for i in range(40)]
    touch(root, *(f"original_sequences/youtube/c23/videos/{v}.mp4" for p in pairs for v in p))
    for m in ("Deepfakes", "NeuralTextures"):
        touch(root, *(f"manipulated_sequences/{m}/c23/videos/{a}_{b}.mp4" for a, b in pairs))
        touch(root, *(f"manipulated_sequences/{m}/c23/videos/{b}_{a}.mp4" for a, b in pairs))
    src = FFPPSource(root=str(root), manipulations=["Deepfakes", "NeuralTextures"])
    with caplog.at_level(logging.WARNING, logger="lmguide.data.layouts.ffpp"):
        items = src.items()
    assert "official" in caplog.text
    split_of = {it.video_id: it.split for it in items}
    for a, b in pairs:
        group = {split_of[f"youtube/{a}"], split_of[f"youtube/{b}"]}
        group |= {
            split_of[f"{m}/{x}_{y}"] for m in ("Deepfakes", "NeuralTextures") for x, y in ((a, b), (b, a))
        }
        assert len(group) == 1, (a, b, group)
    assert set(split_of.values()) == {"train", "val", "test"}
    # a real video's split does not depend on which manipulations are selected
    only = {it.video_id: it.split for it in FFPPSource(root=str(root), manipulations=["Deepfakes"]).items()}
    assert all(only[k] == v for k, v in split_of.items() if k.startswith("youtube/"))


def test_ffpp_max_videos_and_optional_manipulations(tmp_path, touch):
    root = make_ffpp(tmp_path / "ff", touch, manips=["Deepfakes", "FaceShifter"])
    touch(root, "original_sequences/actors/c23/videos/01__kitchen.mp4")
    touch(root, "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__kitchen__ABC.mp4")
    items = FFPPSource(root=str(root), manipulations=["Deepfakes", "FaceShifter"], max_videos=2).items()
    assert sorted(it.video_id for it in items) == [
        "Deepfakes/000_003",
        "Deepfakes/003_000",
        "FaceShifter/000_003",
        "FaceShifter/003_000",
        "youtube/000",
        "youtube/003",
    ]
    dfd = table(FFPPSource(root=str(root), manipulations=["DeepFakeDetection"]).items())
    assert {k: v[0] for k, v in dfd.items()} == {
        "original_sequences/actors/c23/videos/01__kitchen.mp4": 0,
        "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__kitchen__ABC.mp4": 1,
    }
    assert len({v[1] for v in dfd.values()}) == 1  # grouped by the first actor id


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"compression": "c30"}, "compression 'c30'"),
        ({"manipulations": ["Deepfakes", "DeepFake"]}, "manipulations \\['DeepFake'\\] not known"),
        ({"manipulations": ["FaceShifter"]}, "manipulated_sequences/FaceShifter/c23/videos is missing"),
        ({"split_dir": "nope"}, "nope is not a folder"),
        ({"split_dir": "../outside"}, "escapes data.root"),
        ({"max_videos": 0}, "max_videos"),
        ({"split_fractions": {"val": 0.5, "test": 0.5}}, "val \\+ test < 1"),
        ({"split_fractions": {"vall": 0.1}}, "vall"),
    ],
)
def test_ffpp_refuses_bad_options(tmp_path, touch, kwargs, match):
    root = make_ffpp(tmp_path / "ff", touch)
    with pytest.raises(LayoutError, match=match):
        FFPPSource(root=str(root), **kwargs).items()


def test_ffpp_refuses_missing_root_and_folders(tmp_path, touch):
    with pytest.raises(LayoutError, match="data.root is not set"):
        FFPPSource(root=None).items()
    with pytest.raises(LayoutError, match="not a folder"):
        FFPPSource(root=str(tmp_path / "missing")).items()
    root = tmp_path / "ff"
    touch(root, "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4")
    with pytest.raises(LayoutError, match="original_sequences/youtube/c23/videos is missing"):
        FFPPSource(root=str(root), manipulations=["Deepfakes"]).items()
    (root / "original_sequences/youtube/c23/videos").mkdir(parents=True)
    with pytest.raises(LayoutError, match="youtube/c23/videos holds no videos"):
        FFPPSource(root=str(root), manipulations=["Deepfakes"]).items()


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "cannot read JSON"),
        ('{"000": "003"}', "expected a JSON list"),
        ('[["000"]]', "entry 0"),
        ('[["000", 3]]', "entry 0"),
        ('[["000", "000"]]', "entry 0"),
        ('[["000", "003"]]', "also listed in"),  # 000 is in train.json too
    ],
)
def test_ffpp_refuses_malformed_split_json(tmp_path, touch, content, match):
    root = make_ffpp(tmp_path / "ff", touch)
    splits = write_ff_splits(root / "splits")
    (splits / "val.json").write_text(content)
    with pytest.raises(LayoutError, match=match) as err:
        FFPPSource(root=str(root), split_dir="splits").items()
    assert "val.json" in str(err.value)


def test_ffpp_refuses_videos_outside_the_official_split(tmp_path, touch):
    root = make_ffpp(tmp_path / "ff", touch)
    splits = write_ff_splits(root / "splits")
    (splits / "test.json").unlink()
    with pytest.raises(LayoutError, match="test.json is missing"):
        FFPPSource(root=str(root), split_dir="splits").items()
    write_ff_splits(splits, test=(("998", "997"),))
    with pytest.raises(LayoutError, match="videos/999.mp4 \\(id '999'\\) is in none"):
        FFPPSource(root=str(root), split_dir="splits").items()
    write_ff_splits(splits, val=(("071", "888"), ("054", "777")))
    with pytest.raises(LayoutError, match="054_071.mp4: pair"):
        FFPPSource(root=str(root), split_dir="splits").items()


@pytest.mark.parametrize(
    "name,match",
    [
        ("000.mp4", "fake video .*Deepfakes/c23/videos/000.mp4 is not named <target>_<source>.mp4"),
        ("000_003_x.mp4", "000_003_x.mp4 is not named <target>_<source>"),
        ("000_000.mp4", "000_000.mp4: pair \\('000', '000'\\) is in none"),
        ("000_998.mp4", "000_998.mp4: pair \\('000', '998'\\) is in none"),  # ids of two splits
    ],
)
def test_ffpp_refuses_a_fake_without_a_pair_of_the_official_split(tmp_path, touch, name, match):
    # the label is the folder (original_sequences real, manipulated_sequences fake); the split is the pair
    root = make_ffpp(tmp_path / "ff", touch)
    write_ff_splits(root / "splits")
    touch(root, f"manipulated_sequences/Deepfakes/c23/videos/{name}")
    with pytest.raises(LayoutError, match=match):
        FFPPSource(root=str(root), split_dir="splits").items()


# --------------------------------------------------------------------------- Celeb-DF


def make_celebdf(root: Path, touch, test_lines: list[str] | None = None) -> Path:
    touch(
        root,
        "Celeb-real/id0_0000.mp4",
        "Celeb-real/id0_0001.mp4",
        "Celeb-real/id3_0005.mp4",
        "YouTube-real/00000.mp4",
        "YouTube-real/00170.mp4",
        "Celeb-synthesis/id0_id16_0000.mp4",
        "Celeb-synthesis/id3_id0_0005.mp4",
        "Celeb-synthesis/id16_id0_0002.mp4",
    )
    if test_lines is None:
        test_lines = [
            "1 YouTube-real/00170.mp4",
            "1 Celeb-real/id3_0005.mp4",
            "0 Celeb-synthesis/id3_id0_0005.mp4",
        ]
    (root / "List_of_testing_videos.txt").write_text("\n".join(test_lines) + "\n")
    return root


def test_celebdf_test_list_and_identity_groups(tmp_path, touch):
    root = make_celebdf(tmp_path / "cdf", touch)
    got = table(CelebDFSource(root=str(root), split_fractions={"val": 0.5}).items())
    assert len(got) == 8
    assert got["YouTube-real/00170.mp4"] == (0, "test", "YouTube-real/00170")  # 1 = real in the list
    assert got["Celeb-real/id3_0005.mp4"] == (0, "test", "Celeb-real/id3_0005")
    assert got["Celeb-synthesis/id3_id0_0005.mp4"] == (1, "test", "Celeb-synthesis/id3_id0_0005")
    rest = {k: v for k, v in got.items() if v[1] != "test"}
    assert {v[1] for v in rest.values()} <= {"train", "val"}
    assert {k: v[0] for k, v in rest.items()} == {
        "Celeb-real/id0_0000.mp4": 0,
        "Celeb-real/id0_0001.mp4": 0,
        "YouTube-real/00000.mp4": 0,
        "Celeb-synthesis/id0_id16_0000.mp4": 1,
        "Celeb-synthesis/id16_id0_0002.mp4": 1,
    }
    # identity id0: both real videos and the fake made from id0_0000 share a split
    id0 = {got[k][1] for k in ("Celeb-real/id0_0000.mp4", "Celeb-real/id0_0001.mp4")}
    assert id0 == {got["Celeb-synthesis/id0_id16_0000.mp4"][1]}
    assert got["Celeb-synthesis/id16_id0_0002.mp4"][1] == hash_split("celeb:id16", {"val": 0.5})


def test_celebdf_without_test_list(tmp_path, touch):
    root = make_celebdf(tmp_path / "cdf", touch)
    (root / "List_of_testing_videos.txt").unlink()
    with pytest.raises(LayoutError, match="List_of_testing_videos.txt is missing.*test_list=null"):
        CelebDFSource(root=str(root)).items()
    items = CelebDFSource(root=str(root), test_list=None, split_fractions={"val": 0.3, "test": 0.3}).items()
    fr = {"val": 0.3, "test": 0.3}
    assert {it.key: it.split for it in items}["YouTube-real/00170.mp4"] == hash_split("youtube:00170", fr)


@pytest.mark.parametrize(
    "line,match",
    [
        (
            "0 Celeb-real/id0_0000.mp4",
            "means fake in this file \\(1 = real, 0 = fake\\), but Celeb-real/ holds real",
        ),
        ("1 Celeb-synthesis/id0_id16_0000.mp4", "means real .* Celeb-synthesis/ holds fake"),
        ("1 Celeb-real/id9_0009.mp4", "does not exist"),
        ("2 Celeb-real/id0_0000.mp4", "expected '<1 real \\| 0 fake>"),
        ("Celeb-real/id0_0000.mp4", "expected"),
        ("1 ../Celeb-real/id0_0000.mp4", "escapes data.root"),
        ("1 other/id0_0000.mp4", "not directly in one of"),
    ],
)
def test_celebdf_refuses_bad_test_list_lines(tmp_path, touch, line, match):
    root = make_celebdf(tmp_path / "cdf", touch, ["1 YouTube-real/00170.mp4", line])
    with pytest.raises(LayoutError, match=match) as err:
        CelebDFSource(root=str(root)).items()
    assert f"List_of_testing_videos.txt:2 ({line!r})" in str(err.value)


@pytest.mark.parametrize(
    "rel",
    ["Celeb-fake/id0_id16_0001.mp4", "id0_0002.mp4", "Celeb-real/old/id0_0003.mp4", "YouTube-real/a/b.avi"],
)
def test_celebdf_refuses_videos_outside_its_three_folders(tmp_path, touch, rel):
    root = make_celebdf(tmp_path / "cdf", touch)
    touch(root, rel)
    with pytest.raises(
        LayoutError, match="is not directly in one of \\['Celeb-real', .* so it has no label"
    ) as e:
        CelebDFSource(root=str(root)).items()
    assert f"video {root / rel} " in str(e.value)
    # other files (frames extracted beside the videos, notes) have no label to miss: not refused
    (root / rel).unlink()
    touch(root, "Celeb-real-frames/id0_0000/000.png")
    (root / "README.txt").write_text("Celeb-DF v2\n")
    assert len(CelebDFSource(root=str(root)).items()) == 8


def test_celebdf_refuses_missing_folder(tmp_path, touch):
    root = make_celebdf(tmp_path / "cdf", touch, ["1 Celeb-real/id0_0000.mp4"])
    for f in (root / "YouTube-real").iterdir():
        f.unlink()
    (root / "YouTube-real").rmdir()
    with pytest.raises(LayoutError, match="YouTube-real is missing"):
        CelebDFSource(root=str(root)).items()


# --------------------------------------------------------------------------- DFDC


def make_dfdc(root: Path, touch) -> Path:
    parts = {
        "dfdc_train_part_0": {
            "aaa.mp4": {"label": "REAL", "split": "train", "original": None},
            "bbb.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
            "ccc.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        },
        "dfdc_train_part_1": {
            "ddd.mp4": {"label": "REAL", "split": "train", "original": None},
            "eee.mp4": {"label": "FAKE", "split": "train", "original": "ddd.mp4"},
        },
    }
    for part, meta in parts.items():
        touch(root, *(f"{part}/{name}" for name in meta))
        (root / part / "metadata.json").write_text(json.dumps(meta))
    (root / "notes").mkdir()  # a folder with neither videos nor metadata is not a part
    return root


def test_dfdc_hash_split_keeps_fakes_with_their_original(tmp_path, touch):
    root = make_dfdc(tmp_path / "dfdc", touch)
    items = DFDCSource(root=str(root), split_fractions={"val": 0.3, "test": 0.3}).items()
    got = table(items)
    assert {k: (v[0], v[2]) for k, v in got.items()} == {
        "dfdc_train_part_0/aaa.mp4": (0, "dfdc_train_part_0/aaa"),
        "dfdc_train_part_0/bbb.mp4": (1, "dfdc_train_part_0/bbb"),
        "dfdc_train_part_0/ccc.mp4": (1, "dfdc_train_part_0/ccc"),
        "dfdc_train_part_1/ddd.mp4": (0, "dfdc_train_part_1/ddd"),
        "dfdc_train_part_1/eee.mp4": (1, "dfdc_train_part_1/eee"),
    }
    fr = {"val": 0.3, "test": 0.3}
    assert {got[f"dfdc_train_part_0/{n}.mp4"][1] for n in "aaa bbb ccc".split()} == {hash_split("aaa", fr)}
    assert {got[f"dfdc_train_part_1/{n}.mp4"][1] for n in ("ddd", "eee")} == {hash_split("ddd", fr)}


def test_dfdc_part_splits(tmp_path, touch):
    root = make_dfdc(tmp_path / "dfdc", touch)
    src = DFDCSource(root=str(root), part_splits={"train": ["*_0"], "test": ["dfdc_train_part_[1-9]"]})
    assert {it.key.split("/")[0]: it.split for it in src.items()} == {
        "dfdc_train_part_0": "train",
        "dfdc_train_part_1": "test",
    }
    with pytest.raises(LayoutError, match="'dfdc_train_part_1' matches none of part_splits"):
        DFDCSource(root=str(root), part_splits={"train": ["*_0"]}).items()
    with pytest.raises(LayoutError, match="matches several splits"):
        DFDCSource(root=str(root), part_splits={"train": ["*"], "val": ["*_0"]}).items()
    with pytest.raises(LayoutError, match="unknown split"):
        DFDCSource(root=str(root), part_splits={"training": ["*"]}).items()


def _edit_meta(root: Path, fn) -> Path:
    path = root / "dfdc_train_part_0/metadata.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))
    return path


def test_dfdc_refuses_bad_metadata(tmp_path, touch):
    root = make_dfdc(tmp_path / "dfdc", touch)
    meta = _edit_meta(root, lambda m: m.update({"zzz.mp4": {"label": "REAL"}}))
    with pytest.raises(
        LayoutError, match="entry 'zzz.mp4': file .*zzz.mp4 listed in .*metadata.json does not"
    ):
        DFDCSource(root=str(root)).items()
    _edit_meta(root, lambda m: m.update({"zzz.mp4": {"label": "real-ish"}}))
    with pytest.raises(LayoutError, match="label 'real-ish' is not REAL or FAKE") as err:
        DFDCSource(root=str(root)).items()
    assert str(meta) in str(err.value)
    _edit_meta(root, lambda m: m.update({"zzz.mp4": {"label": "FAKE", "original": 7}}))
    touch(root, "dfdc_train_part_0/zzz.mp4")
    with pytest.raises(LayoutError, match="'original' must be"):
        DFDCSource(root=str(root)).items()
    _edit_meta(root, lambda m: m.pop("zzz.mp4"))
    with pytest.raises(LayoutError, match="\\['zzz.mp4'\\] in .* are not listed"):
        DFDCSource(root=str(root)).items()
    _edit_meta(root, lambda m: m.update({"../x.mp4": {"label": "FAKE"}}))
    with pytest.raises(LayoutError, match="escapes"):
        DFDCSource(root=str(root)).items()
    meta.write_text("[1, 2")
    with pytest.raises(LayoutError, match="metadata.json: cannot read JSON"):
        DFDCSource(root=str(root)).items()


@pytest.mark.parametrize(
    "record,shown",
    [
        ({"label": "UNKNOWN"}, "'UNKNOWN'"),
        ({"label": 2}, "2"),
        ({"label": 1}, "1"),  # DFDC writes REAL/FAKE, never 0/1
        ({"label": ""}, "''"),
        ({"label": None}, "None"),
        ({"split": "train", "original": None}, "None"),  # no label at all
    ],
)
def test_dfdc_refuses_labels_other_than_real_or_fake(tmp_path, touch, record, shown):
    root = make_dfdc(tmp_path / "dfdc", touch)
    meta = _edit_meta(root, lambda m: m.update({"bbb.mp4": record}))
    with pytest.raises(LayoutError) as err:
        DFDCSource(root=str(root)).items()
    assert str(err.value) == f"{meta}: entry 'bbb.mp4': label {shown} is not REAL or FAKE"
    _edit_meta(root, lambda m: m.update({"bbb.mp4": {"label": "fake", "original": "aaa.mp4"}}))
    assert table(DFDCSource(root=str(root)).items())["dfdc_train_part_0/bbb.mp4"][0] == 1  # any case


def test_dfdc_refuses_part_without_metadata_and_wrong_root(tmp_path, touch):
    root = make_dfdc(tmp_path / "dfdc", touch)
    touch(root, "dfdc_train_part_7/fff.mp4")
    with pytest.raises(LayoutError, match="dfdc_train_part_7 holds videos but no metadata.json"):
        DFDCSource(root=str(root)).items()
    with pytest.raises(LayoutError, match="must be the folder that holds the part folders"):
        DFDCSource(root=str(root / "dfdc_train_part_0")).items()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LayoutError, match="found no media"):
        DFDCSource(root=str(empty)).items()


# --------------------------------------------------------------------------- folder


def test_folder_with_split_folders(tmp_path, touch):
    root = tmp_path / "f"
    touch(root, "train/real/a.png", "train/fake/clips/b.mp4", "val/real/c.png", "test/fake/d.png")
    assert table(FolderSource(root=str(root)).items()) == {
        "train/real/a.png": (0, "train", None),
        "train/fake/clips/b.mp4": (1, "train", "train/fake/clips/b"),
        "val/real/c.png": (0, "val", None),
        "test/fake/d.png": (1, "test", None),
    }


def test_folder_hash_split_and_group_by_folder(tmp_path, touch):
    root = tmp_path / "f"
    frames = [f"fake/vid1/{i:03d}.png" for i in range(5)]
    touch(root, "real/a.png", "real/sub/b.mp4", *frames, "fake/c.png")
    fr = {"val": 0.1, "test": 0.1}
    got = table(FolderSource(root=str(root)).items())
    assert got["real/a.png"] == (0, hash_split("real/a.png", fr), None)
    assert got["real/sub/b.mp4"] == (0, hash_split("real/sub/b", fr), "real/sub/b")
    assert all(got[f][2] is None for f in frames)
    grouped = table(FolderSource(root=str(root), group_by_folder=True).items())
    assert {grouped[f] for f in frames} == {(1, hash_split("fake/vid1", fr), "fake/vid1")}
    assert grouped["fake/c.png"][2] is None  # directly in fake/: its own clip
    only_real = tmp_path / "r"
    touch(only_real, "real/x.png")
    assert [it.label for it in FolderSource(root=str(only_real)).items()] == [0]


def test_folder_refuses_bad_trees(tmp_path, touch):
    root = tmp_path / "f"
    touch(root, "reals/a.png")
    with pytest.raises(LayoutError, match="has neither a real/ nor a fake/ folder"):
        FolderSource(root=str(root)).items()
    touch(root, "real/a.png")
    with pytest.raises(LayoutError, match="reals/a.png is not under one of \\['fake', 'real'\\]"):
        FolderSource(root=str(root)).items()
    split_root = tmp_path / "s"
    touch(split_root, "train/real/a.png", "val/x.png")
    with pytest.raises(LayoutError, match="s/val has neither a real/ nor a fake/"):
        FolderSource(root=str(split_root)).items()
    touch(split_root, "val/real/b.png", "real/c.png")
    with pytest.raises(LayoutError, match="both split folders"):
        FolderSource(root=str(split_root)).items()


@pytest.mark.parametrize(
    "files,stray,allowed",
    [
        (["real/a.png", "fake/b.png", "unknown/c.png"], "unknown/c.png", "['fake', 'real']"),
        (["real/a.png", "fake/b.png", "c.mp4"], "c.mp4", "['fake', 'real']"),
        (
            ["train/real/a.png", "train/fake/b.png", "train/unknown/c.png"],
            "train/unknown/c.png",
            "['fake', 'real']",
        ),
        (
            ["train/real/a.png", "test/fake/b.png", "training/real/c.png"],
            "training/real/c.png",
            "['test', 'train', 'val']",
        ),
    ],
)
def test_folder_refuses_media_in_a_folder_that_is_no_label(tmp_path, touch, files, stray, allowed):
    root = tmp_path / "f"
    touch(root, *files)
    with pytest.raises(LayoutError) as err:
        FolderSource(root=str(root)).items()
    assert f"{root / stray} is not under one of {allowed}" in str(err.value)
    assert "so it has no label/split" in str(err.value)
    (root / stray).unlink()  # without it the tree is fine; its folder, now without media, is no error
    assert {it.label for it in FolderSource(root=str(root)).items()} == {0, 1}


def test_folder_without_real_or_fake_folders_names_the_folder(tmp_path, touch):
    touch(tmp_path / "f", "0/a.png", "1/b.png")
    with pytest.raises(
        LayoutError, match=re.escape(f"{tmp_path / 'f'} has neither a real/ nor a fake/ folder")
    ):
        FolderSource(root=str(tmp_path / "f")).items()


# --------------------------------------------------------------------------- csv


def test_csv_labels_splits_and_keys(tmp_path, touch):
    root = tmp_path / "data"
    touch(root, "a.png", "b.png", "v/c.mp4", "v/d.mp4", "e.png")
    csv = tmp_path / "list.csv"
    csv.write_text(
        "path,label,video_id,split\n"
        "a.png,real,,train\n"
        "b.png,FAKE,,val\n"
        "v/c.mp4,0,clip_c,test\n"
        "v/d.mp4,1,clip_d,\n"
        "./e.png,fake,,\n"
    )
    got = table(CSVSource(file=str(csv), root=str(root)).items())
    fr = {"val": 0.1, "test": 0.1}
    assert got == {
        "a.png": (0, "train", None),
        "b.png": (1, "val", None),
        "v/c.mp4": (0, "test", "clip_c"),
        "v/d.mp4": (1, hash_split("clip_d", fr), "clip_d"),
        "e.png": (1, hash_split("e.png", fr), None),
    }


def test_csv_root_defaults_to_the_csv_folder_and_absolute_paths(tmp_path, touch):
    touch(tmp_path, "imgs/a.png", "imgs/b.png")
    (tmp_path / "l.csv").write_text(f"label,path\n1,imgs/a.png\n0,{tmp_path / 'imgs/b.png'}\n")
    with pytest.raises(LayoutError, match="is absolute"):
        CSVSource(file=str(tmp_path / "l.csv")).items()
    got = table(CSVSource(file=str(tmp_path / "l.csv"), allow_absolute=True).items())
    assert got["imgs/a.png"] == (1, hash_split("imgs/a.png", {"val": 0.1, "test": 0.1}), None)
    assert sorted(got) == ["imgs/a.png", "imgs/b.png"] and got["imgs/b.png"][0] == 0


@pytest.mark.parametrize(
    "body,match",
    [
        ("file,label\na.png,0\n", "missing column\\(s\\) \\['path'\\].*found \\['file', 'label'\\]"),
        ("a.png,0\n", "missing column\\(s\\) \\['path', 'label'\\]"),
        ("path,label\na.png,0\nmissing.png,1\n", "list.csv:3: file missing.png does not exist"),
        ("path,label\na.png,maybe\n", "list.csv:2: label 'maybe'"),
        ("path,label\na.png,0\nb.png,2\n", "list.csv:3: label '2' is not one of 0, 1, real, fake"),
        ("path,label\na.png,-1\n", "list.csv:2: label '-1' is not one of"),
        ("path,label\na.png,\n", "list.csv:2: label '' is not one of"),
        ("path,label\na.png\n", "list.csv:2: label '' is not one of"),  # the cell is missing
        ("path\na.png\n", "missing column\\(s\\) \\['label'\\]"),
        ("path,label\n.,0\n", "list.csv:2: path . is a folder, not a file"),
        ("path,label,split\na.png,0,training\n", "list.csv:2: split 'training'"),
        ("path,label\n../a.png,0\n", "list.csv:2: path ../a.png escapes data.root"),
        ("path,label\n,0\n", "list.csv:2: empty path"),
        ("path,label,video_id\na.png,0,v\nb.png,1,v\n", "list.csv:3: video_id 'v' has label 1"),
        ("path,label\na.png,0\na.png,0\n", "share the sample key"),
        ("path,label\n", "found no media"),
    ],
)
def test_csv_refuses_bad_rows(tmp_path, touch, body, match):
    root = tmp_path / "d"
    touch(root, "a.png", "b.png")
    (root / "list.csv").write_text(body)
    with pytest.raises(LayoutError, match=match):
        CSVSource(file=str(root / "list.csv")).items()


def test_csv_with_many_missing_files_counts_them_and_names_the_first_few(tmp_path, touch):
    """A list with thousands of rows used to stop at its first missing file: the user fixed one, ran
    again, met the next. Now one line counts them all and shows the first five."""
    root = tmp_path / "d"
    touch(root, "a.png", "b.png")
    rows = ["a.png,0", *(f"gone{i}.png,1" for i in range(8)), "b.png,0"]
    (root / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(LayoutError) as err:
        CSVSource(file=str(root / "list.csv")).items()
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"8 of 10 files listed in {root / 'list.csv'} do not exist: ")
    assert (
        "gone0.png (line 3), gone1.png (line 4)" in line and "gone4.png (line 7), … (first 5 shown)" in line
    )
    assert "gone5.png" not in line and f"relative to {root}" in line
    # a few: every one is named, no "first shown"
    (root / "list.csv").write_text("path,label\na.png,0\nx.png,1\ny.png,1\nz.png,0\n")
    with pytest.raises(
        LayoutError, match=r"^3 of 4 files .*: x.png \(line 3\), y.png \(line 4\), z.png \(line 5\);"
    ):
        CSVSource(file=str(root / "list.csv")).items()


def test_csv_refuses_missing_file(tmp_path):
    with pytest.raises(LayoutError, match="nope.csv does not exist"):
        CSVSource(file=str(tmp_path / "nope.csv")).items()
    with pytest.raises(LayoutError, match="file is not set"):
        CSVSource(file="???").items()


# --------------------------------------------------------------------------- demo


def test_demo_labels_everything_real_and_refuses_bad_splits(cache_dir):
    from lmguide.data.layouts.demo import DemoSource

    def items(splits: dict) -> list[SourceItem]:
        return DemoSource(str(cache_dir), splits, use_npm=False).items()

    got = table(items({"train": ["single_face.jpg"], "val": ["no_face.mp4"]}))
    assert got == {"single_face.jpg": (0, "train", None), "no_face.mp4": (0, "val", None)}  # real faces only
    with pytest.raises(LayoutError, match="unknown split\\(s\\) \\['training'\\]"):
        items({"training": ["single_face.jpg"]})
    with pytest.raises(LayoutError, match="single_face.jpg is listed in more than one split"):
        items({"train": ["single_face.jpg"], "test": ["single_face.jpg"]})
    with pytest.raises(FileNotFoundError, match="demo media file face.jpg is not in"):
        items({"train": ["face.jpg"]})


# --------------------------------------------------------------------------- the Hydra configs


def _tree_for(name: str, root: Path, touch) -> list[str]:
    """Build a fake tree for the layout ``name`` under ``root``; returns extra overrides."""
    if name == "ffpp":
        make_ffpp(root, touch)
    elif name == "celebdf":
        make_celebdf(root, touch)
    elif name == "dfdc":
        make_dfdc(root, touch)
    elif name == "folder":
        touch(root, "real/a.png", "fake/b.mp4")
    elif name == "csv":
        touch(root, "a.png", "b.png")
        (root / "list.csv").write_text("path,label\na.png,real\nb.png,fake\n")
        return [f"data.source.file={root / 'list.csv'}"]
    else:  # the standard test sets' layouts build their trees in their own test file
        from tests.test_layouts_standard import STANDARD_TREES

        if name not in STANDARD_TREES:
            raise AssertionError(f"conf/data/{name}.yaml has no fake tree in tests/test_layouts*.py")
        return STANDARD_TREES[name](root, touch)
    return []


# demo and demo_swaps fetch real media (tests/test_data.py, tests/test_generalisation.py)
DATA_CONFIGS = sorted(
    p.stem for p in (CONF_DIR / "data").glob("*.yaml") if p.stem not in ("base", "demo", "demo_swaps")
)


def test_every_layout_has_a_config():
    assert {"ffpp", "celebdf", "dfdc", "folder", "csv"} <= set(DATA_CONFIGS)


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_data_config_composes_and_indexes_a_fake_tree(name, tmp_path, touch):
    root = tmp_path / "root"
    extra = _tree_for(name, root, touch)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={name}", f"data.root={root}", *extra])
    assert cfg.data.fakes is None and cfg.data.faces.face_size > 0
    assert cfg.data.source.root == str(root)
    source = instantiate(cfg.data.source)
    assert source.name == name
    items = source.items()
    assert items and {it.label for it in items} == {0, 1}
    assert all(it.path.is_file() and not Path(it.key).is_absolute() for it in items)
