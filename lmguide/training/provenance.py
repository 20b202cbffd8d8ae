"""What a checkpoint learned from, and how far to trust it: ``lmguide_provenance``.

After the run has scored its sets, :func:`stamp_checkpoints` writes into ``best.ckpt`` and ``last.ckpt``
the layout, the people and faces of each split (with their sources), the steps, and the run's own test,
swaps and cross-source AUCs with their people-bootstrap intervals (plain numbers and strings only: the
file stays loadable with ``weights_only=True``). :func:`provenance_line` turns it into the one line that
``predict`` prints and the web page shows beside every verdict. A checkpoint comes from a user, so
every value is type-checked and shortened before it is shown; nothing in it is ever run.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmguide.data.manifest import row_person
from lmguide.data.sources import XSOURCE, source_counts

KEY = "lmguide_provenance"
#: the scored sets whose AUC the provenance keeps, with the words the line uses
RESULTS = (("test", "test"), ("swaps", "face swaps"), (XSOURCE, "unseen sources"))
#: layouts that are demonstrations, not data a production detector is trained on
DEMO_LAYOUTS = ("demo",)


def build_provenance(datamodule, metrics: dict, steps: int) -> dict:
    """The record of a run: ``{"layout", "steps", "splits": {split: {"people", "faces", "sources"}},
    "held_out": [sources], "results": {set: {"auc", "lo", "hi"}}}``."""
    rows = getattr(datamodule, "rows", {}) or {}
    splits = {}
    for split, split_rows in rows.items():
        per = source_counts(split_rows)
        people = {row_person(r) for r in split_rows}
        splits[split] = {"people": len(people), "faces": len(split_rows), "sources": sorted(per)}
    results = {}
    for name, _ in RESULTS:
        auc = metrics.get(f"{name}/auc")
        if isinstance(auc, int | float) and math.isfinite(auc):
            lo, hi = metrics.get(f"{name}/auc_ci95_lo"), metrics.get(f"{name}/auc_ci95_hi")
            results[name] = {"auc": float(auc), "lo": _num(lo), "hi": _num(hi)}
    return {
        "layout": str(getattr(getattr(datamodule, "source", None), "name", "") or "unknown"),
        "steps": int(steps),
        "splits": splits,
        "held_out": list(splits.get(XSOURCE, {}).get("sources", [])),
        "results": results,
    }


def _num(v) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def stamp_checkpoints(paths, provenance: dict) -> list[Path]:
    """Add ``provenance`` to each existing checkpoint of ``paths`` (rewritten atomically); their paths."""
    from lmguide.training.checkpoint import AtomicCheckpointIO, read_checkpoint

    done = []
    for p in paths:
        if p and Path(p).is_file():
            ckpt = read_checkpoint(p)
            ckpt[KEY] = provenance
            AtomicCheckpointIO().save_checkpoint(ckpt, p)
            done.append(Path(p))
    return done


def _text(v, limit: int = 40) -> str:
    """A string from the file, printable and at most ``limit`` characters; ``?`` for anything else."""
    if not isinstance(v, str):
        return "?"
    s = "".join(c for c in v if c.isprintable())
    return s[:limit] + ("…" if len(s) > limit else "")


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def result_rows(provenance) -> list[tuple[str, float, float | None, float | None]]:
    """``(what, AUC, lo, hi)`` per set the run scored (test, face swaps, unseen sources), type-checked."""
    if not isinstance(provenance, dict):
        return []
    results = provenance.get("results") if isinstance(provenance.get("results"), dict) else {}
    held = provenance.get("held_out") if isinstance(provenance.get("held_out"), list) else []
    rows = []
    for name, words in RESULTS:
        r = results.get(name)
        if not isinstance(r, dict) or _num(r.get("auc")) is None:
            continue
        if name == XSOURCE and held:
            words += f" ({', '.join(_text(h, 30) for h in held[:5])})"
        rows.append((words, _num(r["auc"]), _num(r.get("lo")), _num(r.get("hi"))))
    return rows


def provenance_line(provenance) -> str:
    """One line: who the model was trained on, its steps, its AUCs with intervals, and for a demo layout
    that it is a demonstration. A checkpoint without the record says so."""
    if not isinstance(provenance, dict):
        return "provenance: this checkpoint does not record what it was trained on (an older checkpoint)"
    layout = _text(provenance.get("layout"))
    splits = provenance.get("splits") if isinstance(provenance.get("splits"), dict) else {}
    train = splits.get("train") if isinstance(splits.get("train"), dict) else {}
    people, faces = _int(train.get("people")), _int(train.get("faces"))
    steps = _int(provenance.get("steps"))
    who = f"{people if people is not None else '?'} people ({faces if faces is not None else '?'} faces)"
    parts = [f"trained on {who} of the {layout} set" + (f", {steps} steps" if steps is not None else "")]
    for words, auc, lo, hi in result_rows(provenance):
        ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
        parts.append(f"{words} AUC {auc:.2f}{ci}")
    line = "; ".join(parts)
    if layout in DEMO_LAYOUTS:
        line += ". A demonstration model, not a production detector"
    return line
