"""What predict found, per frame, per clip (clip models) and per file, and how it is shown: the console
table (rich) and the ``output=`` file (CSV: a row per file, per frame and per clip; JSON: the same as
nested records). A file's verdict comes from its faces' scores by :func:`lmguide.inference.verdict.decide`
(any face at or above the checkpoint's threshold, :func:`lmguide.training.checkpoint.verdict_threshold`, by
default); its P(fake) is the score that rule compared with the threshold, and its row names the rule."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lmguide.data.cache import atomic_write_text
from lmguide.inference.verdict import Verdict, VerdictRule, decide

CSV_FIELDS = [
    "level",
    "file",
    "kind",
    "frame",
    "frame_last",
    "clip",
    "padded",
    "face",
    "status",
    "prob_fake",
    "verdict",
    "threshold",
    "rule",
    "fake_frames",
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
class ClipResult:
    """One clip a clip model scored: its index in the file, the face track it was cut from, and the
    sampled frame indices it holds in order (a repeat-padded clip repeats them, as training does)."""

    clip: int
    face: int
    frames: list[int]
    prob_fake: float | None = None
    padded: bool = False

    @property
    def frame_range(self) -> tuple[int, int]:
        return self.frames[0], self.frames[-1]


@dataclass
class FileResult:
    file: str
    kind: str  # image or video
    status: str = "ok"  # ok, no_face, unreadable, decode_error; clip models: too_short too
    reason: str = ""
    frames: list[FrameResult] = field(default_factory=list)
    # clip models: the scored clips; the file's score then comes from theirs (frames hold no score)
    clips: list[ClipResult] = field(default_factory=list)
    threshold: float | None = None  # the checkpoint's verdict threshold (set by predict)
    rule: VerdictRule = field(default_factory=VerdictRule)  # how face scores become the verdict

    @property
    def scores(self) -> list[float]:
        if self.clips:
            return [c.prob_fake for c in self.clips if c.prob_fake is not None]
        return [f.prob_fake for f in self.frames if f.prob_fake is not None]

    @property
    def decision(self) -> Verdict:
        """The file's verdict by ``rule`` (:func:`lmguide.inference.verdict.decide`)."""
        if self.clips:
            units = [(c.clip, c.prob_fake) for c in self.clips]
        else:
            units = [(f.frame, f.prob_fake) for f in self.frames]
        return decide(units, self.threshold, self.rule, self.kind, clips=bool(self.clips))

    @property
    def verdict(self) -> str | None:
        """``fake`` / ``real`` by ``rule`` at ``threshold`` (None without a score or a threshold)."""
        return self.decision.label

    @property
    def prob_fake(self) -> float | None:
        """The score the rule compares with the threshold (any: the most suspect face; mean: the mean)."""
        return self.decision.score

    @property
    def face_scores(self) -> dict[int, float]:
        """P(fake) per face index (the mean over the frames it was scored in): a second face, e.g. a
        photo inside the photo, is visible instead of being averaged into the file's score."""
        by_face: dict[int, list[float]] = {}
        for f in self.clips or self.frames:  # clip models: the mean over the clips of its track
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
        d = self.decision
        return {
            "file": self.file,
            "kind": self.kind,
            "status": self.status,
            "prob_fake": d.score,
            "verdict": d.label,
            "threshold": self.threshold,
            "rule": d.rule,
            "fake_frames": d.fake_frames,
            "frames_scored": self.frames_scored,
            "frames_no_face": self.frames_no_face,
            "frames_unreadable": self.frames_unreadable,
            "reason": self.reason,
        }


# -- reporting -------------------------------------------------------------------------------------


def _fmt(p: float | None) -> str:
    return "-" if p is None or math.isnan(p) else f"{p:.4f}"


def _mark(result: FileResult, p: float | None) -> str:
    thr = result.threshold
    return " (>= threshold)" if p is not None and thr is not None and p >= thr else ""


def print_frames(console, result: FileResult) -> None:
    d = result.decision
    head = f"{result.file}: P(fake) {_fmt(d.score)}"
    if d.label is not None:
        head += f" -> {d.label} ({d.rule})"
    if result.status != "ok":
        head += f" [{result.status}: {result.reason}]"
    console.print(head, soft_wrap=True, highlight=False, markup=False)
    for f in result.frames:
        where = f"frame {f.frame:5d}" + ("" if f.face is None else f" face {f.face}")
        if f.status == "ok":
            what = "in a clip" if result.clips else f"P(fake) {_fmt(f.prob_fake)}{_mark(result, f.prob_fake)}"
        else:
            what = f"{f.status}: {f.reason}"
        console.print(f"  {where}  {what}", soft_wrap=True, highlight=False, markup=False)
    for c in result.clips:
        pad = " (repeat-padded)" if c.padded else ""
        where = f"clip {c.clip:3d} face {c.face} frames {c.frame_range[0]}-{c.frame_range[1]}{pad}"
        console.print(
            f"  {where}  P(fake) {_fmt(c.prob_fake)}{_mark(result, c.prob_fake)}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


def print_table(console, results: list[FileResult]) -> None:
    from rich.table import Table

    rules = sorted({f"{r.kind}s: {r.decision.rule}" for r in results if r.scores})
    title = f"lmguide: verdict per file ({'; '.join(rules) or 'nothing scored'}; frames = frames scored)"
    table = Table(title=title, header_style="bold")
    for col, justify in [
        ("file", "left"),
        ("type", "left"),
        ("P(fake)", "right"),
        ("verdict", "left"),
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
        d = r.decision
        table.add_row(
            r.file, r.kind, _fmt(d.score), d.label or "-", per_face, str(r.frames_scored),
            str(r.frames_no_face), note,
        )  # fmt: skip
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
        doc = {
            "files": [
                {
                    **r.summary(),
                    "fake_run": None if r.decision.run is None else list(r.decision.run),
                    "frames": [asdict(f) for f in r.frames],
                    "clips": [_clip_doc(c) for c in r.clips],
                }
                for r in results
            ]
        }
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")  # a new file renamed over: no link followed
        return
    f = io.StringIO()
    w = _InertWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in results:
        s = r.summary()  # the verdict rule runs once per file, not once per column
        w.writerow(
            {
                **s,
                "level": "file",
                "prob_fake": _csv_num(s["prob_fake"]),
                "verdict": s["verdict"] or "",
                "threshold": _csv_num(r.threshold),
                "fake_frames": " ".join(map(str, s["fake_frames"])),
            }
        )
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
        for c in r.clips:
            w.writerow(
                {
                    "level": "clip",
                    "file": r.file,
                    "kind": r.kind,
                    "clip": c.clip,
                    "face": c.face,
                    "frame": c.frame_range[0],
                    "frame_last": c.frame_range[1],
                    "padded": int(c.padded),
                    "status": "ok",
                    "prob_fake": _csv_num(c.prob_fake),
                }
            )
    atomic_write_text(path, f.getvalue())


#: first characters that make a spreadsheet read a cell as a formula (OWASP's CSV injection list)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def inert_cell(v):
    """``v``, with a text cell that a spreadsheet would run as a formula (a file named
    ``=HYPERLINK(...).jpg``) prefixed by ``'`` so it stays text."""
    return f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_START) else v


class _InertWriter(csv.DictWriter):
    def writerow(self, rowdict):
        return super().writerow({k: inert_cell(v) for k, v in rowdict.items()})


def _clip_doc(c: ClipResult) -> dict:
    first, last = c.frame_range
    return {**asdict(c), "frame_first": first, "frame_last": last}


def _csv_num(v: float | None) -> str:
    return "" if v is None else f"{v:.6f}"
