"""FaceForensics++: real YouTube videos and their face-swapped / reenacted fakes.

Folders (as the official download script writes them)::

    original_sequences/youtube/<comp>/videos/071.mp4                 real
    manipulated_sequences/<Manip>/<comp>/videos/071_054.mp4           fake (071's video, 054's face)
    original_sequences/actors/<comp>/videos/01__scene.mp4            real  (DeepFakeDetection only)
    manipulated_sequences/DeepFakeDetection/<comp>/videos/01_02__scene__X.mp4   fake

Splits: the official ``train/val/test.json`` (lists of id pairs) when ``split_dir`` is given, else a
stable hash of the *pair* (see :meth:`FFPPSource.pair_groups`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lmguide.data.layouts.base import (
    SPLITS,
    LayoutError,
    SourceItem,
    check_fractions,
    check_root,
    hash_split,
    load_json,
    rel_key,
    require_items,
    resolve_under,
)
from lmguide.data.media import VIDEO_SUFFIXES

log = logging.getLogger(__name__)

COMPRESSIONS = ("raw", "c23", "c40")
CLASSIC = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
MANIPULATIONS = (*CLASSIC, "FaceShifter", "DeepFakeDetection")
DFD = "DeepFakeDetection"


def _videos(folder: Path, max_videos: int | None) -> list[Path]:
    """The videos of one ``videos/`` folder (sorted, first ``max_videos``); an empty folder is an error."""
    if not folder.is_dir():
        raise LayoutError(f"ffpp: expected folder {folder} is missing")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise LayoutError(f"ffpp: folder {folder} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    return files[:max_videos] if max_videos is not None else files


def _pair(stem: str) -> tuple[str, str] | None:
    """``071_054`` → ``("071", "054")``; None for names that are not a FF++ pair."""
    parts = stem.split("_")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def load_official_splits(split_dir: Path) -> dict[frozenset[str], str]:
    """``{frozenset({a, b}): split}`` from the official ``train/val/test.json`` in ``split_dir``, plus
    ``{frozenset({a}): split}`` for each single id (a real video).

    Each file is a JSON list of ``[id, id]`` pairs. A file that is missing or malformed, or an id
    listed in two splits, is a LayoutError naming the file.
    """
    if not split_dir.is_dir():
        raise LayoutError(f"ffpp: split_dir {split_dir} is not a folder (it should hold train/val/test.json)")
    pairs: dict[frozenset[str], str] = {}
    seen: dict[str, Path] = {}
    for split in SPLITS:
        path = split_dir / f"{split}.json"
        if not path.is_file():
            raise LayoutError(f"ffpp: official split file {path} is missing")
        data = load_json(path)
        if not isinstance(data, list):
            raise LayoutError(f"{path}: expected a JSON list of [id, id] pairs, got {type(data).__name__}")
        for i, pair in enumerate(data):
            ok = isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) and x for x in pair)
            if not ok or pair[0] == pair[1]:
                raise LayoutError(
                    f"{path}: entry {i} is {pair!r}, expected a pair of two different id strings"
                )
            for vid in pair:
                if vid in seen:
                    raise LayoutError(f"{path}: video id {vid!r} is also listed in {seen[vid]}")
                seen[vid] = path
                pairs[frozenset([vid])] = split
            pairs[frozenset(pair)] = split
    return pairs


@dataclass
class FFPPSource:
    """FaceForensics++ videos of one compression level, real plus the selected manipulations.

    root: the FF++ folder holding ``original_sequences/`` and ``manipulated_sequences/``.
    compression: ``c23`` (default, "HQ"), ``c40`` ("LQ") or ``raw``.
    manipulations: which fake folders to read; FaceShifter and DeepFakeDetection are opt-in.
    split_dir: folder with the official ``train.json``/``val.json``/``test.json``; absolute, or
        relative to ``root``. None: hash split of the pairs with ``split_fractions`` (a warning).
    max_videos: at most this many videos (first by name) per folder, for smoke tests.
    """

    root: str | None = None
    compression: str = "c23"
    manipulations: Sequence[str] = field(default_factory=lambda: list(CLASSIC))
    split_dir: str | None = None
    split_fractions: Mapping[str, float] = field(default_factory=lambda: {"val": 0.14, "test": 0.14})
    max_videos: int | None = None
    name: str = "ffpp"

    def items(self) -> list[SourceItem]:
        root = check_root(self.root, "ffpp")
        if self.compression not in COMPRESSIONS:
            raise LayoutError(f"ffpp: compression {self.compression!r} is not one of {COMPRESSIONS}")
        manips = list(self.manipulations or [])
        unknown = sorted(set(manips) - set(MANIPULATIONS))
        if unknown or not manips:
            raise LayoutError(
                f"ffpp: manipulations {unknown or manips} not known; choose from {MANIPULATIONS}"
            )
        if self.max_videos is not None and self.max_videos < 1:
            raise LayoutError(f"ffpp: max_videos must be >= 1 or null, got {self.max_videos}")
        fractions = check_fractions(self.split_fractions, "ffpp split_fractions")

        official = None
        if self.split_dir:
            official = load_official_splits(resolve_under(root, self.split_dir, True, "ffpp split_dir"))
        else:
            log.warning(
                "ffpp: no split_dir given, splitting by a hash of the video pairs; the official "
                "FaceForensics++ split (split_dir with train/val/test.json) is recommended for results "
                "comparable with published ones"
            )

        # (folder, label, video_id prefix, is DFD)
        folders: list[tuple[Path, int, str, bool]] = []
        if any(m != DFD for m in manips):
            folders.append(
                (root / "original_sequences/youtube" / self.compression / "videos", 0, "youtube", False)
            )
        if DFD in manips:
            folders.append(
                (root / "original_sequences/actors" / self.compression / "videos", 0, "actors", True)
            )
        for m in manips:
            folders.append((root / "manipulated_sequences" / m / self.compression / "videos", 1, m, m == DFD))

        partner = self.pair_groups(root) if official is None else {}
        out = []
        for folder, label, prefix, is_dfd in folders:
            for path in _videos(folder, self.max_videos):
                stem = path.stem
                if is_dfd:
                    # the official json files do not cover DeepFakeDetection: always hashed by actor
                    split = hash_split(f"dfd:{stem.split('_')[0]}", fractions)
                elif official is not None:
                    split = self._official_split(official, path, label)
                else:
                    group = partner.get(stem, f"video:{stem}") if label == 0 else self._fake_group(stem)
                    split = hash_split(group, fractions)
                out.append(
                    SourceItem(path, label, split, key=rel_key(path, root), video_id=f"{prefix}/{stem}")
                )
        return require_items(out, "ffpp", root)

    @staticmethod
    def _fake_group(stem: str) -> str:
        pair = _pair(stem)
        return "pair:" + "_".join(sorted(pair)) if pair else f"video:{stem}"

    def pair_groups(self, root: Path) -> dict[str, str]:
        """Hash group of each real video id: the sorted pair of the fakes that use it.

        FF++ pairs its 1000 videos into 500 couples (a, b) with fakes ``a_b`` and ``b_a``. Grouping a
        fake by its sorted pair, and a real video by the pair its fakes name, keeps both fakes and
        both source videos of a couple in one split, as the official split does. The couples are read
        from the names in *every* manipulation folder of this compression (not only the selected ones
        and ignoring ``max_videos``), so a real video's split does not change with the selection.
        A real id used by several couples (not the case in FF++) takes the first one by name; a real
        id no fake uses is its own group.
        """
        groups: dict[str, str] = {}
        base = root / "manipulated_sequences"
        for m in MANIPULATIONS:
            folder = base / m / self.compression / "videos"
            if m == DFD or not folder.is_dir():
                continue
            for path in folder.iterdir():
                pair = _pair(path.stem) if path.suffix.lower() in VIDEO_SUFFIXES else None
                if pair:
                    group = "pair:" + "_".join(sorted(pair))
                    for vid in pair:
                        groups[vid] = min(groups.get(vid, group), group)
        return groups

    @staticmethod
    def _official_split(official: dict[frozenset[str], str], path: Path, label: int) -> str:
        stem = path.stem
        if label == 0:
            if frozenset([stem]) in official:
                return official[frozenset([stem])]
            raise LayoutError(f"ffpp: real video {path} (id {stem!r}) is in none of the official split files")
        pair = _pair(stem)
        if pair is None:
            raise LayoutError(f"ffpp: fake video {path} is not named <target>_<source>.mp4")
        split = official.get(frozenset(pair)) if pair[0] != pair[1] else None
        if split is None:
            raise LayoutError(f"ffpp: fake video {path}: pair {pair} is in none of the official split files")
        return split
