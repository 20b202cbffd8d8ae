"""Celeb-DF (v2, and v1 with the same structure): celebrity interviews, YouTube videos and their
face-swapped versions.

Folders::

    Celeb-real/id3_0005.mp4              real  (identity id3)
    YouTube-real/00170.mp4               real
    Celeb-synthesis/id0_id16_0000.mp4    fake  (id0's video id0_0000 with id16's face)
    List_of_testing_videos.txt           the official test set: "<label> <relpath>", label 1 = REAL

The test split is the official list; the remaining videos are train, with a ``split_fractions.val``
share carved out by a stable hash of the identity. A video anywhere else under the root would have no
label: refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lmguide.data.layouts.base import (
    LayoutError,
    SourceItem,
    check_fractions,
    check_root,
    hash_split,
    media_files,
    rel_key,
    require_items,
    resolve_under,
)
from lmguide.data.media import VIDEO_SUFFIXES

#: folder → label (0 real, 1 fake)
FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}


def identity_group(folder: str, stem: str) -> str:
    """The hash group of a video, so that one person's videos share a split.

    Celeb-real ``id3_0005`` → ``id3``. Celeb-synthesis ``id0_id16_0000`` → ``id0``: the first id is
    the person whose real video was altered (``id0_0000``), so a fake stays with its source video;
    the face-donor ``id16`` may land elsewhere. A YouTube-real video is its own group (no identity).
    """
    if folder == "YouTube-real":
        return f"youtube:{stem}"
    return f"celeb:{stem.split('_')[0]}"


def read_test_list(path: Path, root: Path, layout: str = "celebdf") -> set[str]:
    """The keys (paths relative to ``root``) of the official test videos.

    The file's own convention is label 1 = real, 0 = fake; a label that disagrees with the video's
    folder, a listed file that does not exist or a malformed line is a LayoutError naming the line.
    """
    if not path.is_file():
        raise LayoutError(
            f"{layout}: test list {path} is missing (set data.source.test_list=null to split by hash instead)"
        )
    keys: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n} ({line.strip()!r})"
        fields = line.strip().split(maxsplit=1)
        if len(fields) != 2 or fields[0] not in ("0", "1"):
            raise LayoutError(f"{where}: expected '<1 real | 0 fake> <folder>/<video>'")
        full = resolve_under(root, fields[1], what=f"{where}: path")
        key = rel_key(full, root)
        folder = key.split("/")[0]
        if folder not in FOLDERS or key.count("/") != 1:
            raise LayoutError(f"{where}: the video is not directly in one of {sorted(FOLDERS)}")
        listed_real = fields[0] == "1"
        if listed_real != (FOLDERS[folder] == 0):
            kind = "real" if FOLDERS[folder] == 0 else "fake"
            raise LayoutError(
                f"{where}: label {fields[0]} means {'real' if listed_real else 'fake'} in this file "
                f"(1 = real, 0 = fake), but {folder}/ holds {kind} videos"
            )
        if not full.is_file():
            raise LayoutError(f"{where}: listed video {full} does not exist")
        keys.add(key)
    if not keys:
        raise LayoutError(f"{layout}: test list {path} lists no videos")
    return keys


def _refuse_stray_videos(root: Path, keys: set[str], layout: str) -> None:
    """A video under ``root`` outside the three folders has no label and would be left out: refuse it."""
    stray = [p for p in media_files(root, VIDEO_SUFFIXES) if rel_key(p, root) not in keys]
    if stray:
        more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        raise LayoutError(
            f"{layout}: video {stray[0]}{more} is not directly in one of {sorted(FOLDERS)}, so it has no "
            "label; move it or remove it"
        )


@dataclass
class CelebDFSource:
    """Celeb-DF v2 videos (v1: :class:`CelebDFv1Source`).

    root: the folder holding ``Celeb-real/``, ``YouTube-real/``, ``Celeb-synthesis/``.
    test_list: the official test list, relative to ``root`` (or absolute). None: no official test
        set, the test split is hashed too (``split_fractions.test``).
    split_fractions: ``val``: share of the non-test identities held out for validation; ``test``:
        share of identities for test, only when ``test_list`` is None.
    """

    root: str | None = None
    test_list: str | None = "List_of_testing_videos.txt"
    split_fractions: Mapping[str, float] = field(default_factory=lambda: {"val": 0.1, "test": 0.1})
    name: str = "celebdf"

    def items(self) -> list[SourceItem]:
        layout = self.name
        root = check_root(self.root, layout)
        test_keys: set[str] | None = None
        if self.test_list:
            test_list = resolve_under(root, self.test_list, True, f"{layout} test_list")
            test_keys = read_test_list(test_list, root, layout)
        shares = dict(self.split_fractions or {})
        if test_keys is not None:  # the official list is the test split: its share is not used
            shares.pop("test", None)
        fractions = check_fractions(shares, f"{layout} split_fractions")
        out = []
        for folder, label in FOLDERS.items():
            path = root / folder
            if not path.is_dir():
                raise LayoutError(f"{layout}: expected folder {path} is missing")
            for video in sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
                key = rel_key(video, root)
                if test_keys is not None and key in test_keys:
                    split = "test"
                else:
                    split = hash_split(identity_group(folder, video.stem), fractions)
                out.append(SourceItem(video, label, split, key=key, video_id=f"{folder}/{video.stem}"))
        _refuse_stray_videos(root, {it.key for it in out}, layout)
        return require_items(out, layout, root)


@dataclass
class CelebDFv1Source(CelebDFSource):
    """Celeb-DF v1 (408 real, 795 fake videos): the folders, file names and test list of v2, so the
    v2 indexer under its own name (its cache folder and its messages)."""

    name: str = "celebdf_v1"
