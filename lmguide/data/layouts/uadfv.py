"""UADFV: 49 real videos and a face-swapped fake of each.

Folders::

    real/0000.mp4          real
    fake/0000_fake.mp4     fake, made from real/0000.mp4

There is no official split (DeepfakeBench tests on all 98 videos). Splits are a stable hash of the
video id (``0000``), so a real video and its fake always share one. A fake not named
``<id>_fake.<ext>`` would have no known real video, and a video anywhere else under the root no
label: both are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lmguide.data.layouts.base import (
    LayoutError,
    SourceItem,
    check_fractions,
    check_root,
    hash_split,
    refuse_unlisted,
    rel_key,
    require_items,
)
from lmguide.data.media import VIDEO_SUFFIXES

#: folder → label (0 real, 1 fake)
FOLDERS = {"real": 0, "fake": 1}
FAKE_SUFFIX = "_fake"


@dataclass
class UADFVSource:
    """UADFV videos from ``real/`` and ``fake/``.

    root: the folder holding ``real/`` and ``fake/``.
    split_fractions: val/test shares of the video ids (a real and its fake count as one).
    """

    root: str | None = None
    split_fractions: Mapping[str, float] = field(default_factory=lambda: {"val": 0.1, "test": 0.1})
    name: str = "uadfv"

    def items(self) -> list[SourceItem]:
        layout = self.name
        root = check_root(self.root, layout)
        fractions = check_fractions(self.split_fractions, f"{layout} split_fractions")
        out = []
        for folder, label in FOLDERS.items():
            path = root / folder
            if not path.is_dir():
                raise LayoutError(
                    f"{layout}: expected folder {path} is missing (UADFV holds real/ and fake/)"
                )
            for video in sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
                vid = video.stem
                if label == 1:
                    if not vid.endswith(FAKE_SUFFIX) or vid == FAKE_SUFFIX:
                        raise LayoutError(
                            f"{layout}: fake video {video} is not named <id>{FAKE_SUFFIX}{video.suffix}, so "
                            "its real video (and split) is unknown; rename it after its real video"
                        )
                    vid = vid[: -len(FAKE_SUFFIX)]
                split = hash_split(f"uadfv:{vid}", fractions)
                key = rel_key(video, root)
                out.append(SourceItem(video, label, split, key=key, video_id=f"{folder}/{video.stem}"))
        why = "is not directly in real/ or fake/"
        refuse_unlisted(root, {it.key for it in out}, layout, why, "move it or remove it")
        return require_items(out, layout, root)
