"""``python -m lmguide.predict ... report=html``: one self-contained HTML page per input file, to hand on.

Each page holds the file's verdict with the rule and threshold that made it
(:mod:`lmguide.inference.verdict`), the score of every face and sampled frame, a video's timeline, the
pictures of the faces the verdict rests on (crop, mean attention, Grad-CAM, each head:
:mod:`lmguide.viz.tiles`), the checkpoint's sha256, its provenance and its own test / face-swap /
unseen-source AUCs with intervals, and a plain caveat. Pictures are embedded as PNG data, there is no script
and no link outside the page, so it opens offline in any browser; every text from the file or the checkpoint
is escaped.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lmguide.data.cache import atomic_write_text
from lmguide.inference.results import FileResult
from lmguide.training.provenance import provenance_line, result_rows

CAVEAT = (
    "A score is the model's opinion of these face crops, not proof. The model flags faces that differ "
    "from the real faces it was trained on: a real photo from an unfamiliar camera, compression or "
    "lighting can score high, and a forgery made by a method it never saw can score low (its AUC on "
    "unseen sources, above, says how much that matters). Check the faces the verdict rests on, and do "
    "not act on this page alone."
)

STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}td,th{padding:3px 8px;"
    "text-align:left}table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}.fake{color:#b00}"
    ".real{color:#070}figure{display:inline-block;margin:4px;width:260px;vertical-align:top}"
    "figcaption{font-size:12px}.caveat{background:#fff6e0;padding:8px;border-left:4px solid #e0a000}"
)


@dataclass
class Checkpoint:
    """What the report says about the model: its file, sha256, threshold and provenance record."""

    path: str
    sha256: str
    threshold: float
    threshold_note: str
    provenance: dict | None


def report_name(display: str, taken: set[str]) -> str:
    """``<display name>.html`` with path separators and odd characters made safe, unique in ``taken``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", display.replace("/", "__")).strip("._") or "file"
    name, k = f"{stem}.html", 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}.html"
    taken.add(name)
    return name


def png_data(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode a picture as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _p(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def render(
    result: FileResult,
    ckpt: Checkpoint,
    tiles: list[tuple[np.ndarray, str]],
    timeline: np.ndarray | None = None,
    notes: list[str] | None = None,
) -> str:
    """The page of one file (a string of HTML)."""
    e = html.escape
    d = result.decision
    verdict = d.label or "no verdict"
    head = (
        f"<h1>{e(result.file)}</h1><p style='font-size:1.4em'>P(fake) {_p(d.score)} → "
        f"<b class='{e(verdict)}'>{e(verdict)}</b></p><p>Rule: {e(d.rule)}; threshold "
        f"{ckpt.threshold:.4f} ({e(ckpt.threshold_note)}). Status: {e(result.status)}"
        + (f" ({e(result.reason)})" if result.reason else "")
        + "</p>"
    )
    if d.run is not None:
        head += f"<p>Fake run: sampled frames {d.run[0]}–{d.run[1]}.</p>"
    rows = []
    for f in result.frames:
        over = f.prob_fake is not None and f.prob_fake >= ckpt.threshold
        box = "" if f.box is None else ", ".join(f"{v:.0f}" for v in f.box)
        rows.append(
            f"<tr><td>{f.frame}</td><td>{'' if f.face is None else f.face}</td><td>{e(f.status)}</td>"
            f"<td>{_p(f.prob_fake)}</td><td>{'yes' if over else ''}</td><td>{box}</td>"
            f"<td>{'' if f.det_score is None else f'{f.det_score:.2f}'}</td><td>{e(f.reason)}</td></tr>"
        )
    for c in result.clips:
        first, last = c.frame_range
        rows.append(
            f"<tr><td>{first}–{last}</td><td>{c.face}</td><td>clip {c.clip}</td><td>{_p(c.prob_fake)}</td>"
            f"<td>{'yes' if c.prob_fake is not None and c.prob_fake >= ckpt.threshold else ''}</td>"
            "<td></td><td></td><td></td></tr>"
        )
    scores = (
        "<h2>Every face and frame</h2><table><tr><th>frame</th><th>face</th><th>status</th><th>P(fake)</th>"
        "<th>≥ threshold</th><th>box (x0, y0, x1, y1)</th><th>detector</th><th>note</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    pics = ""
    if timeline is not None:
        pics += f"<h2>Timeline</h2><img alt='P(fake) per sampled frame' src='{png_data(timeline)}'>"
    if tiles:
        figs = "".join(
            f"<figure><img alt='{e(cap)}' width=256 src='{png_data(img)}'><figcaption>{e(cap)}</figcaption>"
            "</figure>"
            for img, cap in tiles
        )
        pics += f"<h2>The faces the verdict rests on</h2>{figs}"
    pics += "".join(f"<p>{e(n)}</p>" for n in notes or [])
    metrics = "".join(
        f"<tr><td>{e(w)}</td><td>{auc:.3f}</td><td>"
        + (f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "-")
        + "</td></tr>"
        for w, auc, lo, hi in result_rows(ckpt.provenance)
    )
    model = (
        f"<h2>The model</h2><p>Checkpoint {e(Path(ckpt.path).name)}, "
        f"sha256 <code>{e(ckpt.sha256)}</code>.</p>"
        f"<p>{e(provenance_line(ckpt.provenance))}.</p>"
        + (
            "<table><tr><th>its own evaluation</th><th>AUC</th><th>95 % interval (people resampled)</th></tr>"
            f"{metrics}</table>"
            if metrics
            else ""
        )
    )
    caveat = f"<h2>Read this first</h2><p class='caveat'>{e(CAVEAT)}</p>"
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>lmguide report: {e(result.file)}</title>"
        f"<style>{STYLE}</style>{head}{caveat}{pics}{scores}{model}</html>\n"
    )


def write_report(path: Path, page: str) -> Path:
    """Write one page (a new file renamed over: no link followed)."""
    atomic_write_text(path, page)
    return path
