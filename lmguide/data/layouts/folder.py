"""A plain folder tree: ``real/`` and ``fake/`` (images and/or videos, any depth).

Either::

    root/real/**  root/fake/**                      split by a stable hash of the clip
or::

    root/{train,val,test}/{real,fake}/**            the split is the folder
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lmguide.data.layouts.base import (
    SPLITS,
    LayoutError,
    SourceItem,
    check_fractions,
    check_root,
    hash_split,
    media_files,
    non_media_files,
    refuse_unlabelled,
    rel_key,
    require_items,
)
from lmguide.data.media import VIDEO_SUFFIXES

CLASSES = {"real": 0, "fake": 1}


@dataclass
class FolderSource:
    """Images and videos labelled by their ``real/`` or ``fake/`` folder.

    root: the folder holding ``real/`` and ``fake/`` (or ``train/``, ``val/``, ``test/`` with them).
    group_by_folder: images in one subfolder (e.g. frames extracted from one video) form one clip
        for video-level metrics and share a split. Images directly in ``real/``/``fake/`` stay
        their own clip. False: every image is its own clip.
    split_fractions: val/test shares for the hash split (without split folders).
    """

    root: str | None = None
    group_by_folder: bool = False
    split_fractions: Mapping[str, float] = field(default_factory=lambda: {"val": 0.1, "test": 0.1})
    name: str = "folder"
    #: files under real/ and fake/ that are not images or videos (set by items(), listed by prepare)
    skipped: list[Path] = field(default_factory=list, init=False, repr=False)

    def items(self) -> list[SourceItem]:
        root = check_root(self.root, "folder")
        fractions = check_fractions(self.split_fractions, "folder split_fractions")
        split_dirs = [s for s in SPLITS if (root / s).is_dir()]
        if split_dirs:
            if any((root / c).exists() for c in CLASSES):
                raise LayoutError(
                    f"folder layout: {root} has both split folders {split_dirs} and real/ or fake/ at the "
                    "top; use one scheme"
                )
            refuse_unlabelled(root, sorted(SPLITS), "folder layout", "label/split")
            bases = [(root / s, s) for s in split_dirs]
        else:
            bases = [(root, None)]
        out = []
        self.skipped = []
        for base, split in bases:
            present = [c for c in CLASSES if (base / c).is_dir()]
            if not present:
                raise LayoutError(f"folder layout: {base} has neither a real/ nor a fake/ folder")
            refuse_unlabelled(base, sorted(CLASSES), "folder layout", "label/split")
            for cls in present:
                self.skipped += non_media_files(base / cls)
                for path in media_files(base / cls):
                    key = rel_key(path, root)
                    video_id = self._clip(path, key, base / cls)
                    out.append(
                        SourceItem(
                            path,
                            CLASSES[cls],
                            split or hash_split(video_id or key, fractions),
                            key=key,
                            video_id=video_id,
                        )
                    )
        return require_items(out, "folder", root)

    def _clip(self, path: Path, key: str, class_dir: Path) -> str | None:
        """Video: its key without suffix. Image: its folder (``group_by_folder``) or None."""
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return key.rsplit(".", 1)[0]
        if self.group_by_folder and path.parent != class_dir:
            return key.rsplit("/", 1)[0]
        return None
