"""What predict found, per frame and per file, and how it is shown: the console table (rich) and the
``output=`` file (CSV: a row per file and per frame; JSON: the same as nested records)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CSV_FIELDS = [
    "level",
    "file",
    "kind",
    "frame",
    "face",
    "status",
    "prob_fake",
    "det_score",
    "x0",
    "y0",
    "x1",
    "y1",
    "frames_scored",
    "frames_no_face",
    "frames_unreadable",
    "reason",
]


@dataclass
class FrameResult:
    """One scored face, or one frame that gave no score (status no_face / too_small / decode_error)."""

    frame: int
    status: str  # ok, no_face, too_small, decode_error
    face: int | None = None
    prob_fake: float | None = None
    det_score: float | None = None
    box: tuple[float, float, float, float] | None = None
    reason: str = ""


@dataclass
class FileResult:
    file: str
    kind: str  # image or video
    status: str = "ok"  # ok, no_face, unreadable, decode_error
    reason: str = ""
    frames: list[FrameResult] = field(default_factory=list)

    @property
    def scores(self) -> list[float]:
        return [f.prob_fake for f in self.frames if f.prob_fake is not None]

    @property
    def prob_fake(self) -> float | None:
        s = self.scores
        return float(np.mean(s)) if s else None

    @property
    def face_scores(self) -> dict[int, float]:
        """P(fake) per face index (the mean over the frames it was scored in): a second face, e.g. a
        photo inside the photo, is visible instead of being averaged into the file's score."""
        by_face: dict[int, list[float]] = {}
        for f in self.frames:
            if f.prob_fake is not None:
                by_face.setdefault(f.face or 0, []).append(f.prob_fake)
        return {k: float(np.mean(v)) for k, v in sorted(by_face.items())}

    def _frames_with(self, pred) -> int:
        return len({f.frame for f in self.frames if pred(f)})

    @property
    def frames_scored(self) -> int:
        return self._frames_with(lambda f: f.status == "ok")

    @property
    def frames_no_face(self) -> int:
        scored = {f.frame for f in self.frames if f.status == "ok"}
        return len({f.frame for f in self.frames if f.status in ("no_face", "too_small")} - scored)

    @property
    def frames_unreadable(self) -> int:
        return self._frames_with(lambda f: f.status == "decode_error")

    def summary(self) -> dict:
        return {
            "file": self.file,
            "kind": self.kind,
            "status": self.status,
            "prob_fake": self.prob_fake,
            "frames_scored": self.frames_scored,
            "frames_no_face": self.frames_no_face,
            "frames_unreadable": self.frames_unreadable,
            "reason": self.reason,
        }


# -- reporting -------------------------------------------------------------------------------------


def _fmt(p: float | None) -> str:
    return "-" if p is None or math.isnan(p) else f"{p:.4f}"


def print_frames(console, result: FileResult) -> None:
    head = f"{result.file}: P(fake) {_fmt(result.prob_fake)}"
    if result.status != "ok":
        head += f" [{result.status}: {result.reason}]"
    console.print(head, soft_wrap=True, highlight=False, markup=False)
    for f in result.frames:
        where = f"frame {f.frame:5d}" + ("" if f.face is None else f" face {f.face}")
        what = f"P(fake) {_fmt(f.prob_fake)}" if f.status == "ok" else f"{f.status}: {f.reason}"
        console.print(f"  {where}  {what}", soft_wrap=True, highlight=False, markup=False)


def print_table(console, results: list[FileResult]) -> None:
    from rich.table import Table

    title = "lmguide: P(fake) per file (mean of its frames; frames = frames scored)"
    table = Table(title=title, header_style="bold")
    for col, justify in [
        ("file", "left"),
        ("type", "left"),
        ("P(fake)", "right"),
        ("per face", "left"),
        ("frames", "right"),
        ("no face", "right"),
        ("note", "left"),
    ]:
        table.add_column(col, justify=justify, overflow="fold")
    for r in results:
        note = r.reason if r.status == "ok" else f"{r.status.replace('_', ' ')}: {r.reason}"
        faces = r.face_scores
        per_face = "  ".join(f"{k}: {_fmt(v)}" for k, v in faces.items()) if len(faces) > 1 else ""
        table.add_row(
            r.file, r.kind, _fmt(r.prob_fake), per_face, str(r.frames_scored), str(r.frames_no_face), note
        )
    console.print(table)
    no_face = [r.file for r in results if r.status == "no_face"]
    bad = [r.file for r in results if r.status in ("unreadable", "decode_error")]
    if no_face:
        console.print(f"no face found in: {', '.join(no_face)}", soft_wrap=True, highlight=False)
    if bad:
        console.print(f"could not be decoded: {', '.join(bad)}", soft_wrap=True, highlight=False)


def write_output(path: Path, results: list[FileResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        doc = {"files": [{**r.summary(), "frames": [asdict(f) for f in r.frames]} for r in results]}
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        for r in results:
            w.writerow({**r.summary(), "level": "file", "prob_fake": _csv_num(r.prob_fake)})
            for fr in r.frames:
                x0, y0, x1, y1 = fr.box or ("",) * 4
                w.writerow(
                    {
                        "level": "frame",
                        "file": r.file,
                        "kind": r.kind,
                        "frame": fr.frame,
                        "face": "" if fr.face is None else fr.face,
                        "status": fr.status,
                        "prob_fake": _csv_num(fr.prob_fake),
                        "det_score": _csv_num(fr.det_score),
                        **dict(zip(("x0", "y0", "x1", "y1"), (x0, y0, x1, y1), strict=True)),
                        "reason": fr.reason,
                    }
                )


def _csv_num(v: float | None) -> str:
    return "" if v is None else f"{v:.6f}"
