"""``predictions.csv``: one row per scored face of every scored split, the unit two runs are paired by.

Columns (:data:`FIELDS`): ``split`` (val, test, swaps, ...), ``key`` (the frame's path inside its data
set, the manifest's sample id; a fake's carries its prefix, ``sbi:`` or ``swap:``), ``person`` (the
bootstrap's and the clustered DeLong test's cluster), ``video``, ``label`` (1 = fake), ``p_fake`` and
``source`` (the package the face came from, empty where the layout records none) and ``kind``
(``real``, ``fake``: one of the data set's own, or a fake made here, ``self-blend`` or ``swap``); files
written before these two columns existed are read without them (``kind`` then from the label alone).
``lmguide.train`` writes it for every split it scores, ``lmguide.eval`` for val and the split asked; the
sweep report reads it to compare two settings on the same faces (:mod:`lmguide.sweeps.faces`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

FIELDS = ("split", "key", "person", "video", "label", "p_fake", "source", "kind")
#: the columns a predictions file must have (``source`` and ``kind`` came later)
REQUIRED = FIELDS[:6]
NAME = "predictions.csv"


def kinds_of(res: dict) -> list[str]:
    """A scored set's ``kind`` per face (:func:`~lmguide.evaluation.metrics.score_split`), or ``real`` /
    ``fake`` from the labels where it was scored without one."""
    return list(res.get("kind") or ["fake" if lab else "real" for lab in res["label"].tolist()])


def write_predictions(path: Path, scored: dict[str, dict]) -> Path:
    """``scored``: split name -> :func:`lmguide.evaluation.metrics.score_split`'s result. Written whole to a
    temp file and renamed, so a reader never sees half a file."""
    from lmguide.data.cache import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FIELDS)
    for split, res in scored.items():
        src = res.get("source") or [""] * len(res["key"])
        labels = res["label"].tolist()
        cols = (res["key"], res["person"], res["video"], labels, res["prob"].tolist(), src, kinds_of(res))
        for key, person, video, label, p, source, kind in zip(*cols, strict=True):
            w.writerow([split, key, person, video, int(label), f"{p:.9g}", source, kind])
    atomic_write_text(Path(path), buf.getvalue())
    return Path(path)


def read_predictions(path: Path) -> dict[str, dict[str, list]]:
    """split -> columns (``key``, ``person``, ``video`` as strings, ``label`` int, ``p_fake`` float), in
    file order. ValueError naming the file when it lacks a column or holds a value that is not one."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {', '.join(missing)} of a predictions file")
        out: dict[str, dict[str, list]] = {}
        for n, row in enumerate(reader, start=2):
            cols = out.setdefault(row["split"], {c: [] for c in FIELDS[1:]})
            try:
                label, p = int(row["label"]), float(row["p_fake"])
            except ValueError:
                raise ValueError(f"{path}:{n}: label {row['label']!r} / p_fake {row['p_fake']!r}") from None
            for c in ("key", "person", "video"):
                cols[c].append(row[c])
            cols["source"].append(row.get("source") or "")
            cols["kind"].append(row.get("kind") or ("fake" if label else "real"))
            cols["label"].append(label)
            cols["p_fake"].append(p)
    return out
