"""DeepfakeBench's preprocessed frames, as its rearranged JSON lists them (``preprocessing/dataset_json``).

The JSON (one per data set, written by DeepfakeBench's ``rearrange.py``)::

    {"Celeb-DF-v2": {                              the data set
        "CelebDFv2_real": {                        a label group: its name is the label
            "train": {                             DeepfakeBench's split
                "id0_0000": {"label": "CelebDFv2_real", "frames": ["Celeb-DF-v2/Celeb-real/frames/
                             id0_0000/000.png", ...]}},
            "test": {...}, "val": {...}}, ...}}

FaceForensics++-family files add the compression between split and videos (``"train": {"c23": {...}}``).
Frame paths are relative to ``root`` (DeepfakeBench's ``rgb_dir``, ``datasets/rgb``, for its released
JSONs; the folder ``rearrange.py`` ran in for one written with a relative root); ``\\`` separators
are read as ``/``. Each frame is an image whose clip is its video (``<label group>/<video>``), and its
origin is the label group (``FF-DF``), so per-method statistics can group by it.

Splits: ``splits`` maps lmguide's splits to the JSON's. DeepfakeBench itself reads only train and test,
and its val is a copy of test (Celeb-DF, DFDCP) or of train (DFDC), so by default val is carved from
the train videos by a hash of the video name (``split_fractions.val``). A video listed in several of the
splits read (Celeb-DF's train lists its test videos too; UADFV's and DFD's reals are in all three) is
used once, in the first of test, val, train; a warning counts them. A frame listed under two videos
with one label is used once too (DF40's JSONs repeat the reals per method); with two labels, refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lmguide.data.layouts.base import (
    SPLITS,
    LayoutError,
    SourceItem,
    check_root,
    check_val_fraction,
    hash_split,
    load_json,
    missing_listed,
    require_items,
    resolve_under,
)
from lmguide.data.media import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

COMPRESSIONS = ("raw", "c23", "c40")
#: DeepfakeBench's label names that do not end in _real/_fake (its training/config label_dict)
NAMED_LABELS = {
    **dict.fromkeys(("FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FF-FH", "FF-SH"), 1),
    **dict.fromkeys(("DFDCP_FakeA", "DFDCP_FakeB"), 1),
}
#: the order a video listed in several splits is placed in
PRECEDENCE = ("test", "val", "train")


def label_of(name: object, extra: Mapping[str, int], where: str) -> int:
    """0/1 for a DeepfakeBench label name: ``extra`` (data.source.labels), its named labels, else the
    last ``_``/``-`` part of the name (``CelebDFv2_real``, ``simswap_Fake``, ``FF-real``)."""
    if not isinstance(name, str) or not name:
        raise LayoutError(f"{where}: label {name!r} is not a label name")
    if name in extra:
        return extra[name]
    if name in NAMED_LABELS:
        return NAMED_LABELS[name]
    last = name.replace("-", "_").rsplit("_", 1)[-1].lower()
    if last in ("real", "fake"):
        return int(last == "fake")
    raise LayoutError(
        f"{where}: label {name!r} is neither one of DeepfakeBench's nor named *_real/*_fake; map it "
        f"with data.source.labels={{{name}: 0}} (real) or 1 (fake)"
    )


@dataclass
class DeepfakeBenchSource:
    """Frames listed in one of DeepfakeBench's rearranged JSON files.

    file: the JSON (``preprocessing/dataset_json/Celeb-DF-v2.json``), absolute or relative to ``root``.
    root: the folder the frame paths are relative to.
    dataset: the JSON's top-level key to read; None: its only one.
    compression: ``c23``, ``c40`` or ``raw``, for the FaceForensics++-family files that have one.
    splits: ``{lmguide split: JSON split}`` (null: that split is not read); a JSON split named here must
        exist in every label group.
    split_fractions: ``val``: share of the train videos held out as val, when ``splits`` has no val
        (the JSON's test split is the test split, so a ``test`` share is refused).
    labels: ``{label name: 0 or 1}`` for names DeepfakeBench's rules do not cover.
    allow_absolute: accept absolute frame paths (refused by default, like ``..`` out of ``root``).
    allow_missing: leave out listed frames that are not on disk (a warning counts them); False: refuse.
    """

    file: str | None = None
    root: str | None = None
    dataset: str | None = None
    compression: str = "c23"
    splits: Mapping[str, str] = field(default_factory=lambda: {"train": "train", "test": "test"})
    split_fractions: Mapping[str, float] = field(default_factory=lambda: {"val": 0.1})
    labels: Mapping[str, int] | None = None
    allow_absolute: bool = False
    allow_missing: bool = False
    name: str = "deepfakebench"

    def items(self) -> list[SourceItem]:
        layout = self.name
        if self.file in (None, "", "???"):
            raise LayoutError(f"{layout}: data.source.file is not set (DeepfakeBench's JSON of the data set)")
        root = check_root(self.root, layout)
        path = resolve_under(root, self.file, True, f"{layout} file")
        if not path.is_file():
            raise LayoutError(f"{layout}: JSON file {path} does not exist (data.source.file)")
        splits = self._splits()
        labels = self._labels()
        fractions = check_val_fraction(self.split_fractions, f"{layout} split_fractions")
        if "val" in splits:  # the JSON's own val split
            fractions = {"val": 0.0}
        if self.compression not in COMPRESSIONS:
            raise LayoutError(f"{layout}: compression {self.compression!r} is not one of {COMPRESSIONS}")
        data = load_json(path)
        top = self._dataset(data, path)
        videos, repeated = self._videos(top, path, splits)
        if repeated:
            log.warning(
                "%s: %d videos are listed in more than one of the JSON splits read; each is used once, "
                "in the first of %s",
                layout,
                repeated,
                ", ".join(s for s in PRECEDENCE if s in splits),
            )
        out: dict[str, SourceItem] = {}
        first: dict[str, tuple[int, str]] = {}  # key -> (label, where) of its first listing
        missing: list[str] = []
        listed = repeats = empty = 0
        for split, group, video, rec, where in videos:
            at = f"{where}: video {video!r}"
            label = label_of(rec.get("label"), labels, at)
            frames = rec.get("frames")
            if not isinstance(frames, list) or not all(isinstance(f, str) and f for f in frames):
                raise LayoutError(f"{at}: 'frames' must be a list of frame paths")
            empty += not frames
            if split == "train" and "val" not in splits:
                split = hash_split(f"dfb:{video}", fractions)
            for raw in frames:
                file = resolve_under(root, raw.replace("\\", "/"), self.allow_absolute, f"{at}: frame")
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    raise LayoutError(f"{at}: frame {raw!r} is not an image")
                key = file.relative_to(root).as_posix() if file.is_relative_to(root) else f"external{file}"
                if key in first:
                    if first[key][0] != label:
                        raise LayoutError(
                            f"{at}: frame {raw!r} is labelled {label} here but "
                            f"{first[key][0]} in {first[key][1]}; a frame needs one label"
                        )
                    repeats += 1
                    continue
                first[key] = (label, at)
                listed += 1
                if not file.is_file():
                    missing.append(raw)
                    continue
                vid = f"{group}/{video}"
                out[key] = SourceItem(file, label, split, key=key, video_id=vid, origin=group)
        if repeats:
            log.warning(
                "%s: %d frames are listed under more than one video; each is used once", layout, repeats
            )
        if empty:
            log.warning("%s: %d videos of %s list no frames (nothing to index for them)", layout, empty, path)
        if missing:
            line = missing_listed(
                path, missing, listed, "restore them, or set data.source.allow_missing=true"
            )
            if not self.allow_missing:
                raise LayoutError(line)
            log.warning("%s (allow_missing: left out)", line.rsplit(";", 1)[0])
        return require_items(list(out.values()), layout, root)

    def _splits(self) -> dict[str, str]:
        splits = {str(k): v for k, v in dict(self.splits or {}).items() if v not in (None, "")}
        bad = sorted(set(splits) - set(SPLITS))
        if bad or not splits or not all(isinstance(v, str) for v in splits.values()):
            raise LayoutError(
                f"{self.name}: splits {dict(self.splits or {})} must map some of {SPLITS} to the JSON's "
                "split names, e.g. {train: train, test: test}"
            )
        return splits

    def _labels(self) -> dict[str, int]:
        out = {}
        for k, v in dict(self.labels or {}).items():
            if v not in (0, 1) or isinstance(v, bool):
                raise LayoutError(f"{self.name}: labels.{k} must be 0 (real) or 1 (fake), got {v!r}")
            out[str(k)] = int(v)
        return out

    def _dataset(self, data: object, path: Path) -> dict:
        if not isinstance(data, dict) or not data:
            raise LayoutError(f"{path}: expected a JSON object {{data set: {{label group: {{split: ...}}}}}}")
        name = self.dataset if self.dataset is not None else (next(iter(data)) if len(data) == 1 else None)
        if name not in data:
            which = f"has no data set {name!r}" if self.dataset is not None else "holds several data sets"
            raise LayoutError(f"{path} {which}; set data.source.dataset to one of {sorted(data)}")
        top = data[name]
        if not isinstance(top, dict) or not top:
            raise LayoutError(f"{path}: {name!r} must map label groups to their splits")
        return {f"{name}/{g}": v for g, v in top.items()}

    def _videos(self, top: dict, path: Path, splits: dict[str, str]) -> tuple[list[tuple], int]:
        """``(split, group, video, record, where)`` per video, each video once (its split by
        :data:`PRECEDENCE`), and how many were listed in more than one split."""
        seen: set[tuple[str, str]] = set()
        repeated: set[tuple[str, str]] = set()
        out = []
        for split in (s for s in PRECEDENCE if s in splits):
            for where_group, by_split in sorted(top.items()):
                group = where_group.split("/", 1)[1]
                where = f"{path}: {where_group}/{splits[split]}"
                if not isinstance(by_split, dict) or splits[split] not in by_split:
                    have = sorted(by_split) if isinstance(by_split, dict) else by_split
                    raise LayoutError(
                        f"{path}: {where_group} has no {splits[split]!r} split (it has {have}); set "
                        "data.source.splits to the splits it has"
                    )
                videos = self._compressed(by_split[splits[split]], where)
                for video, rec in sorted(videos.items()):
                    if not isinstance(rec, dict):
                        raise LayoutError(f"{where}: video {video!r} must be an object with label and frames")
                    if (group, video) in seen:
                        repeated.add((group, video))
                        continue
                    seen.add((group, video))
                    out.append((split, group, video, rec, where))
        return out, len(repeated)

    def _compressed(self, videos: object, where: str) -> dict:
        """The videos of one split, through its compression level when it has them."""
        if not isinstance(videos, dict):
            raise LayoutError(f"{where}: expected an object of videos, got {type(videos).__name__}")
        if videos and set(videos) <= set(COMPRESSIONS) and all(isinstance(v, dict) for v in videos.values()):
            if self.compression not in videos:
                raise LayoutError(
                    f"{where}: no {self.compression!r} videos (it has {sorted(videos)}); set "
                    "data.source.compression"
                )
            videos = videos[self.compression]
        return videos
