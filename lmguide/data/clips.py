"""Clips for video models: :func:`clip_windows` cuts a face track into windows of consecutive sampled
frames, and :class:`ClipDataset` serves them (image (T, 3, S, S), mask (T, 1, S, S), the video's label)
over the same cached rows as the single-frame :class:`~lmguide.data.datasets.FaceDataset`.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import torch

from lmguide.data.datasets import FaceDataset, sample_key
from lmguide.data.sources import item_sources
from lmguide.runs.errors import require_number

log = logging.getLogger(__name__)


def clip_windows(n: int, frames: int, min_frames: int = 1) -> list[list[int]]:
    """The clips of a face track of ``n`` faces (ordered by frame), as positions 0..n-1 in it: ``n // frames``
    windows of ``frames`` consecutive faces, plus one ending on the last face when ``frames`` does not
    divide ``n`` (it overlaps the one before); a shorter track of at least ``min_frames`` faces gives one
    clip repeat-padded to ``frames`` (``np.linspace`` over its faces), a track under ``min_frames`` none.
    :class:`ClipDataset` (training) and :mod:`lmguide.inference.clips` (predict, visualize) both cut here."""
    if n < max(min_frames, 1):
        return []
    if n < frames:
        return [np.linspace(0, n - 1, frames).round().astype(int).tolist()]
    starts = list(range(0, n - frames + 1, frames))
    if starts[-1] + frames < n:
        starts.append(n - frames)
    return [list(range(s, s + frames)) for s in starts]


class ClipDataset(FaceDataset):
    """Clips of ``frames`` faces from one face track: image (T, 3, S, S), mask (T, 1, S, S), the video's
    label and video id.

    A track is the ok rows of one ``(video_id, face)``, ordered by frame: the largest face of each
    sampled frame of a video (``video_faces=largest``, the default), or one face of a still image (a
    one-frame track). A track of ``n >= frames`` faces gives ``n // frames`` clips of consecutive
    sampled frames, plus one clip ending on the last frame when ``frames`` does not divide ``n`` (it
    overlaps the one before), so every frame is used. A shorter track gives one clip repeat-padded to
    ``frames`` (each frame repeated in order, ``np.linspace`` over its frames) when it has at least
    ``min_frames`` faces, and is skipped otherwise; both are counted (``padded``, ``skipped``) and
    logged, never silent.

    With ``fakes`` every real clip ``k`` is item ``2k`` and a self-blended fake of it item ``2k + 1``:
    one seed per clip, so each frame is blended with the same random parameters (a temporally
    consistent fake), and each frame of a clip gets the same augmentation parameters.
    """

    def __init__(self, *args, frames: int, min_frames: int = 1, split: str = "", **kwargs):
        """``args`` / ``kwargs``: :class:`FaceDataset`'s (rows, root, mask_dir, transform, fakes, …)."""
        frames = require_number("data.clip_frames", frames, low=1, integer=True)
        min_frames = require_number("data.clip_min_frames", min_frames, low=1, high=frames, integer=True)
        super().__init__(*args, **kwargs)
        rows = self.rows
        self.frames, self.min_frames = frames, min_frames
        tracks: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for r in rows:
            tracks[(r["video_id"], r["face"])].append(r)
        self.clips: list[list[dict]] = []
        self.padded = self.skipped = 0
        for key in sorted(tracks):
            track = sorted(tracks[key], key=lambda r: r["frame"])
            windows = clip_windows(len(track), frames, min_frames)
            self.skipped += not windows
            self.padded += bool(windows) and len(track) < frames
            self.clips += [[track[j] for j in w] for w in windows]
        where = f" of the {split} split" if split else ""
        if self.padded or self.skipped:
            log.warning(
                "clips%s: %d of %d face tracks have fewer than %d usable frames: %d repeat-padded to "
                "one clip each, %d skipped (fewer than data.clip_min_frames=%d)",
                where,
                self.padded + self.skipped,
                len(tracks),
                frames,
                self.padded,
                self.skipped,
                min_frames,
            )
        if not self.clips:
            raise ValueError(
                f"no clips{where}: all {len(tracks)} face tracks have fewer than "
                f"data.clip_min_frames={min_frames} usable frames ({self.root}/manifest.csv)"
            )
        log.info(
            "clips%s: %d clips of %d frames from %d face tracks", where, len(self.clips), frames, len(tracks)
        )

    def __len__(self) -> int:
        return len(self.clips) * (2 if self.fakes else 1)

    @property
    def labels(self) -> list[int]:
        if self.fakes is None:
            return [c[0]["label"] for c in self.clips]
        return [lab for c in self.clips for lab in (c[0]["label"], 1)]

    @property
    def item_keys(self) -> list[str]:
        """Per clip, the key of its first frame (:attr:`FaceDataset.item_keys`), unique within a track."""
        ids = [c[0]["sample_id"] for c in self.clips]
        if self.fakes is None:
            return ids
        return [k for sid in ids for k in (sid, self.fake_name(sid))]

    @property
    def item_kinds(self) -> list[str]:  # per clip, as FaceDataset.item_kinds
        return self._kinds(c[0]["label"] for c in self.clips)

    @property
    def item_sources(self) -> list[str]:  # per clip, its first frame's (FaceDataset.item_sources)
        return item_sources([c[0] for c in self.clips], 2 if self.fakes else 1)

    def load(self, i: int | tuple[int, int]) -> dict:
        """The untransformed clip ``i`` (or ``(epoch, i)``): lists of T images and masks, label, video name,
        seed."""
        epoch, i = sample_key(i)
        fake = self.fakes is not None and i % 2 == 1
        clip = self.clips[i // 2 if self.fakes is not None else i]
        seed = self._seed(i, epoch)
        frames = [self._load_row(r, fake, seed) for r in clip]
        out = {
            "image": [f["image"] for f in frames],
            "mask": [f["mask"] for f in frames],
            "label": frames[0]["label"],
            "video": frames[0]["video"],
            "seed": seed,
        }
        for key in ("region_masks", "region_channels", "blend_mask"):
            if key in frames[0]:
                out[key] = [f[key] for f in frames]
        return out

    def __getitem__(self, i: int) -> dict:
        s = self.load(i)
        frames = []
        for k, (img, mask) in enumerate(zip(s["image"], s["mask"], strict=True)):
            self.transform.set_random_seed(s["seed"] + 1)  # the same augmentation on every frame
            frames.append(self._transform(s, img, mask, k))
        # image (T, 3 [+ R'], S, S), mask (T, 1, S, S) [, blend_mask (T, 1, S, S), region_masks (T, R, S, S)]
        out = {key: torch.stack([f[key] for f in frames]) for key in frames[0]}
        out["label"] = torch.tensor(s["label"], dtype=torch.long)
        out["video"] = torch.tensor(self._video_index[s["video"]], dtype=torch.long)
        return out
