"""A synthetic FaceForensics++ c23 tree made of the demo videos, for ``python -m lmguide.bench prepare``.

``n`` videos: ``n / 5`` real ones (``original_sequences/youtube/c23/videos/000.mp4`` …) and as many
per classic manipulation (``manipulated_sequences/Deepfakes/c23/videos/000_001.mp4`` …, FF++'s
``<target>_<source>`` names, the ids paired 000-001, 002-003 …), each a symbolic link to a demo face
video taken in turn, so the real content is decoded, and the official ``splits/train|val|test.json``
(the pairs, 70/15/15), for the real ``ffpp`` layout to index.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmguide.data.layouts.ffpp import CLASSIC

COMPRESSION = "c23"


def build_ffpp_tree(root: Path, n: int, videos: list[Path]) -> Path:
    """Write the tree under ``root`` (links to ``videos``, in turn) and return ``root``."""
    if n < 5 or n % 5:
        raise ValueError(f"--ffpp-tree {n}: give a multiple of 5 (n/5 real videos and n/5 per manipulation)")
    if not videos:
        raise ValueError("no demo video to build the FF++ tree from")
    reals = n // 5
    ids = [f"{i:03d}" for i in range(reals)]
    partner = {ids[i]: f"{i ^ 1:03d}" for i in range(reals)}
    folders = [("original_sequences/youtube", [f"{i}.mp4" for i in ids])] + [
        (f"manipulated_sequences/{m}", [f"{i}_{partner[i]}.mp4" for i in ids]) for m in CLASSIC
    ]
    k = 0
    for folder, names in folders:
        d = root / folder / COMPRESSION / "videos"
        d.mkdir(parents=True, exist_ok=True)
        for name in names:
            (d / name).symlink_to(Path(videos[k % len(videos)]).resolve())
            k += 1
    pairs = sorted({tuple(sorted((i, partner[i]))) for i in ids})
    cut = [round(len(pairs) * f) for f in (0.7, 0.85)]
    split_dir = root / "splits"
    split_dir.mkdir(exist_ok=True)
    for split, chunk in zip(
        ("train", "val", "test"), (pairs[: cut[0]], pairs[cut[0] : cut[1]], pairs[cut[1] :]), strict=True
    ):
        (split_dir / f"{split}.json").write_text(json.dumps([list(p) for p in chunk]))
    return root
