"""DFDC (Deepfake Detection Challenge): part folders of videos, each described by a metadata.json.

Folders::

    dfdc_train_part_0/metadata.json   {"aaqaifqrwn.mp4": {"label": "FAKE", "original": "xugmhbetrw.mp4"}}
    dfdc_train_part_0/aaqaifqrwn.mp4
    dfdc_train_part_1/...

Splits: by part name (``part_splits`` glob patterns), or a stable hash of the *original* video, so a
fake and the real video it was made from always share a split. The ``split`` field of the metadata
is not used (every training part says ``train``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from lmguide.data.layouts.base import (
    SPLITS,
    LayoutError,
    SourceItem,
    check_fractions,
    check_root,
    hash_split,
    load_json,
    record_label,
    rel_key,
    require_items,
    resolve_under,
)
from lmguide.data.media import VIDEO_SUFFIXES

LABELS = {"REAL": 0, "FAKE": 1}


def _videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def part_split(part: str, part_splits: Mapping[str, Sequence[str]]) -> str:
    """The split whose glob patterns match ``part``; none or several matching is a LayoutError."""
    hits = [s for s, pats in part_splits.items() if any(fnmatchcase(part, p) for p in pats or [])]
    if len(hits) != 1:
        why = "matches none of" if not hits else f"matches several splits ({hits}) of"
        raise LayoutError(f"dfdc: part folder {part!r} {why} part_splits {dict(part_splits)}")
    return hits[0]


@dataclass
class DFDCSource:
    """DFDC videos from every part folder under ``root``.

    root: the folder holding the part folders (``dfdc_train_part_*``), each with a ``metadata.json``.
    part_splits: ``{train: [globs], val: [...], test: [...]}`` over part folder names; every part must
        match exactly one split. None: hash split by original video with ``split_fractions``.
    """

    root: str | None = None
    part_splits: Mapping[str, Sequence[str]] | None = None
    split_fractions: Mapping[str, float] = field(default_factory=lambda: {"val": 0.1, "test": 0.1})
    name: str = "dfdc"

    def items(self) -> list[SourceItem]:
        root = check_root(self.root, "dfdc")
        splits = None
        if self.part_splits is not None:
            splits = {str(k): [str(p) for p in (v or [])] for k, v in dict(self.part_splits).items()}
            bad = set(splits) - set(SPLITS)
            if bad:
                raise LayoutError(f"dfdc: part_splits has unknown split(s) {sorted(bad)}; use {SPLITS}")
        fractions = check_fractions(self.split_fractions, "dfdc split_fractions")
        if (root / "metadata.json").is_file() or _videos(root):
            raise LayoutError(
                f"dfdc: {root} holds videos or a metadata.json itself; data.root must be the folder "
                "that holds the part folders (dfdc_train_part_0/, ...)"
            )
        out = []
        parts = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for part in parts:
            meta_path = part / "metadata.json"
            videos = _videos(part)
            if not meta_path.is_file():
                if videos:
                    raise LayoutError(f"dfdc: part folder {part} holds videos but no metadata.json")
                continue  # not a part folder (no videos, no metadata)
            meta = load_json(meta_path)
            if not isinstance(meta, dict):
                raise LayoutError(f"{meta_path}: expected a JSON object mapping file name to its record")
            listed = set()
            split_of_part = part_split(part.name, splits) if splits is not None else None
            for fname, rec in sorted(meta.items()):
                where = f"{meta_path}: entry {fname!r}"
                label = record_label(rec, LABELS, where, "a label")
                path = resolve_under(part, fname, what=f"{where}: file")
                if path.parent != part.resolve():
                    raise LayoutError(f"{where}: the file must be directly in {part}")
                if not path.is_file():
                    raise LayoutError(f"{where}: file {path} listed in {meta_path} does not exist")
                listed.add(path.name)
                original = rec.get("original")
                if label == 1 and original is not None and not isinstance(original, str):
                    raise LayoutError(f"{where}: 'original' must be a file name or null, got {original!r}")
                # a fake goes with the real video it was made from (names are unique across parts)
                group = Path(original).stem if label == 1 and original else path.stem
                split = split_of_part or hash_split(group, fractions)
                out.append(
                    SourceItem(
                        path, label, split, key=rel_key(path, root), video_id=f"{part.name}/{path.stem}"
                    )
                )
            unlisted = sorted(v.name for v in videos if v.name not in listed)
            if unlisted:
                raise LayoutError(
                    f"{meta_path}: video(s) {unlisted[:5]}{' ...' if len(unlisted) > 5 else ''} in {part} "
                    "are not listed (no label)"
                )
        return require_items(out, "dfdc", root)
