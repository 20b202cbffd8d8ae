"""The prepare manifest: its fields and statuses, the index that ``setup`` reads, and summaries.

One row per frame/face of every source file: sample id, source, frame, face, video id, person, label,
split, status (:data:`STATUSES`), reason, the cached crop and landmarks, detector score and origin.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lmguide.data.cache import atomic_write_text
from lmguide.data.layouts.base import SPLITS, SourceItem

MANIFEST_FIELDS = [
    "sample_id",
    "source",
    "frame",
    "face",
    "video_id",
    "person",
    "label",
    "split",
    "status",
    "reason",
    "image",
    "landmarks",
    "det_score",
    "origin",
]
#: what a manifest row's status means
STATUSES = {
    "ok": "face cropped, 478 landmarks and a mask cached",
    "no_face": "the detector found no face in the frame",
    "low_confidence": "a face below data.faces.min_confidence (recorded, not cropped)",
    "too_small": "a face smaller than data.faces.min_face_size pixels",
    "no_landmarks": "FaceMesh found no face in the detector's crop",
    "decode_error": "the video or one of its frames could not be decoded",
    "unreadable": "the image file could not be read",
}
ROW_FIELDS = ("sample_id", "frame", "face", "status", "reason", "image", "landmarks", "det_score")


@dataclass
class PreparedIndex:
    """What ``setup`` reads: the manifest rows and where the files are."""

    root: Path
    mask_dir: Path
    rows: list[dict] = field(default_factory=list)
    manifest: Path | None = None

    def ok_rows(self, split: str | None = None) -> list[dict]:
        return [r for r in self.rows if r["status"] == "ok" and (split is None or r["split"] == split)]


def row_person(row: dict) -> str:
    """Who a manifest row shows: its ``person``, else its video (a clip is one person). The one place
    that default is set: prepare writes it into the manifest, reading an older manifest fills it."""
    return row.get("person") or row["video_id"]


def write_manifest(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, extrasaction="raise", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in MANIFEST_FIELDS})
    atomic_write_text(path, buf.getvalue())


def read_manifest(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:  # the same types as freshly assembled rows
        for k in ("label", "frame", "face"):
            r[k] = int(r[k])
        r["person"] = row_person(r)  # a manifest written before the column existed has none
    return rows


def summarize(rows: list[dict]) -> str:
    by_status = Counter(r["status"] for r in rows)
    by_split = Counter((r["split"], r["label"]) for r in rows if r["status"] == "ok")
    parts = [f"{k}={v}" for k, v in sorted(by_status.items())]
    splits = [
        f"{s} {by_split[(s, 0)] + by_split[(s, 1)]} ({by_split[(s, 0)]} real, {by_split[(s, 1)]} fake)"
        for s in SPLITS
    ]
    return f"{len(rows)} rows ({', '.join(parts)}); usable faces: {', '.join(splits)}"


def status_table(rows: list[dict]) -> str:
    """Rows per status and label, as a small fixed-width table (the prepare summary)."""
    counts = Counter((r["status"], r["label"]) for r in rows)
    statuses = [s for s in STATUSES if any(counts[(s, lab)] for lab in (0, 1))]
    lines = [f"{'status':<15}{'real':>8}{'fake':>8}  meaning"]
    for s in statuses:
        lines.append(f"{s:<15}{counts[(s, 0)]:>8}{counts[(s, 1)]:>8}  {STATUSES[s]}")
    total = Counter(r["label"] for r in rows)
    lines.append(f"{'all':<15}{total[0]:>8}{total[1]:>8}")
    return "\n".join(lines)


def unusable_sources(items: Iterable[SourceItem], rows: list[dict]) -> list[SourceItem]:
    """Source files (videos or images) without a single usable face."""
    usable = {r["source"] for r in rows if r["status"] == "ok"}
    return [i for i in items if i.key not in usable]
