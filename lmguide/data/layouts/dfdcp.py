"""DFDC preview (DFDCP): videos described by one ``dataset.json`` at the root.

Folders::

    dataset.json                                           {"<relative path>": {"label": "fake",
                                                             "set": "test", "target_id": "1061268", ...}}
    original_videos/1061268/1061268_A_001.mp4              real
    method_A/1061268/1061268_A/1255229_1061268_A_001.mp4   fake (method A)
    method_B/...                                           fake (method B)

Splits: the file's ``set``: ``test`` is the test split (the one DeepfakeBench tests on); ``train`` is
train, with a ``split_fractions.val`` share of its identities (``target_id``, else the folder under the method
folder) held out for validation. Each video's top folder (``method_A``, ``original_videos``) is
recorded as its origin, so per-method statistics can group by it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from lmguide.data.layouts.base import (
    LayoutError,
    SourceItem,
    check_root,
    check_val_fraction,
    hash_split,
    load_json,
    missing_listed,
    record_label,
    refuse_unlisted,
    rel_key,
    require_items,
    resolve_under,
)
from lmguide.data.media import VIDEO_SUFFIXES

log = logging.getLogger(__name__)

LABELS = {"real": 0, "fake": 1}
SETS = ("train", "test")


def identity(rel: str, rec: dict, where: str) -> str:
    """The identity a video's split follows: its ``target_id``, else the folder under its top folder
    (``original_videos/<id>/...``, ``method_A/<id>/...``)."""
    tid = rec.get("target_id")
    if tid is not None and not isinstance(tid, str | int):
        raise LayoutError(f"{where}: target_id must be a string or a number, got {tid!r}")
    if tid not in (None, ""):
        return str(tid)
    parts = rel.split("/")
    if len(parts) < 3:
        raise LayoutError(f"{where}: no target_id and no identity folder (<method>/<id>/...) in the path")
    return parts[1]


@dataclass
class DFDCPSource:
    """DFDC preview videos listed in ``dataset.json``.

    root: the DFDCP folder holding ``dataset.json``, ``original_videos/``, ``method_A/``, ``method_B/``.
    metadata: the JSON file, relative to ``root`` (or absolute).
    split_fractions: ``val``: share of the training identities held out for validation (the test
        split is ``set=test``, so a ``test`` share is refused).
    allow_missing: leave out listed videos that are not on disk (a warning counts them); False: refuse.
    """

    root: str | None = None
    metadata: str = "dataset.json"
    split_fractions: Mapping[str, float] = field(default_factory=lambda: {"val": 0.1})
    allow_missing: bool = False
    name: str = "dfdcp"

    def items(self) -> list[SourceItem]:
        layout = self.name
        root = check_root(self.root, layout)
        fractions = check_val_fraction(self.split_fractions, f"{layout} split_fractions")
        meta_path = resolve_under(root, self.metadata, True, f"{layout} metadata")
        if not meta_path.is_file():
            raise LayoutError(
                f"{layout}: metadata file {meta_path} is missing; data.root must be the DFDC preview folder "
                "holding dataset.json (or set data.source.metadata)"
            )
        meta = load_json(meta_path)
        if not isinstance(meta, dict) or not meta:
            raise LayoutError(f"{meta_path}: expected a JSON object mapping video path to its record")
        out: list[SourceItem] = []
        listed: set[str] = set()
        missing: list[str] = []
        for rel, rec in sorted(meta.items()):
            where = f"{meta_path}: entry {rel!r}"
            label = record_label(rec, LABELS, where, "label and set")
            split = str(rec.get("set", "")).lower()
            if split not in SETS:
                raise LayoutError(f"{where}: set {rec.get('set')!r} is not one of {SETS}")
            path = resolve_under(root, rel, what=f"{where}: path")
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                raise LayoutError(f"{where}: not a video ({', '.join(VIDEO_SUFFIXES)})")
            key = rel_key(path, root)
            listed.add(key)
            if not path.is_file():
                missing.append(rel)
                continue
            if split == "train":
                split = hash_split(f"id:{identity(key, rec, where)}", fractions)
            top = key.split("/")[0]
            out.append(SourceItem(path, label, split, key=key, video_id=key.rsplit(".", 1)[0], origin=top))
        if missing:
            line = missing_listed(
                meta_path, missing, len(meta), "restore them, or set data.source.allow_missing=true"
            )
            if not self.allow_missing:
                raise LayoutError(line)
            log.warning("%s (allow_missing: left out)", line.rsplit(";", 1)[0])
        refuse_unlisted(
            root, listed, layout, f"is not listed in {meta_path}", "remove it or add it to the file"
        )
        return require_items(out, layout, root)
