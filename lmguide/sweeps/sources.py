"""Do a source's reals look fake? Per setting and source, over a sweep's seeds.

Each finished job wrote ``curves/sources.json`` (:mod:`lmguide.viz.sources`): per source, the median
P(fake) of its real faces and the run's stored threshold (calibrated on val). Here, per setting and
source: the median over seeds of the reals' median, the median threshold, and in how many seeds the
reals' median lies below its own run's threshold (issue 28's target: on every source, below it).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from lmguide.sweeps.jobs import Group, group_label

FILE = Path("curves") / "sources.json"


@dataclass
class SourceRow:
    setting: str
    source: str
    held_out: bool
    reals: int  # real faces of the source per run (the largest count over seeds)
    medians: list[float]  # per seed: the reals' median P(fake)
    margins: list[float]  # per seed: reals' median minus that run's threshold

    @property
    def below(self) -> int:
        return sum(1 for m in self.margins if m < 0)


def read_sources(job_dir: Path) -> dict | None:
    """A job's ``curves/sources.json``, or None when it has none (older runs) or it is unreadable."""
    path = job_dir / FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("sources"), dict) else None


def source_rows(groups: list[Group]) -> list[SourceRow]:
    rows = []
    for g in groups:
        per: dict[str, SourceRow] = {}
        for job in g.done:
            data = read_sources(job.path)
            thr = data.get("threshold") if data else None
            if not isinstance(thr, int | float):
                continue
            for src, entry in sorted(data["sources"].items()):
                real = entry.get("real") or {}
                med = real.get("median")
                if not isinstance(med, int | float):
                    continue
                row = per.setdefault(
                    src, SourceRow(group_label(g.overrides), src, bool(entry.get("held_out")), 0, [], [])
                )
                row.reals = max(row.reals, int(real.get("n") or 0))
                row.medians.append(float(med))
                row.margins.append(float(med) - float(thr))
        rows += per.values()
    return rows


def sources_markdown(groups: list[Group]) -> str:
    """The table, or "" when no job of the sweep wrote ``curves/sources.json``."""
    rows = source_rows(groups)
    if not rows:
        return ""
    lines = [
        "Reals per source against the threshold (issue 28's target: on every source, the reals' median "
        "P(fake) below the run's stored threshold, calibrated on val). Per setting and source: the "
        "median over seeds of the reals' median P(fake), of its margin to that run's threshold, and the "
        "seeds in which it was below; *held out*: a source no training or validation person comes from "
        "(each run's `curves/sources.png` shows the whole distributions).",
        "",
        "| setting | source | real faces | seeds | reals' median P(fake) | margin to threshold "
        "| seeds below |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        src = f"{r.source} (held out)" if r.held_out else r.source
        lines.append(
            f"| {r.setting} | {src} | {r.reals} | {len(r.medians)} | {statistics.median(r.medians):.3f} "
            f"| {statistics.median(r.margins):+.3f} | {r.below} of {len(r.margins)} |"
        )
    return "\n".join(lines)
