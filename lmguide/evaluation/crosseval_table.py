"""The cross-dataset table of ``lmguide.crosseval``: its rows (one per data set), the markdown and JSON
it is written as, and the reading back of a job's ``crosseval/`` folder for ``lmguide.sweep_report``.

A row holds the statistics of :mod:`lmguide.evaluation.scoring` under its keys, the set's name standing for
eval's split (eval's ``test/auc`` is the row's ``auc``, and ``<set>/auc`` in the flat metrics a sweep report
reads), so a row's numbers are the per-set eval numbers by construction: ``auc`` (per frame or clip)
with its bootstrap interval (``_ci95_lo``/``_hi``, resampling people), ``video_auc`` likewise (a video's
score is the mean of its frames' P(fake), DeepfakeBench's video AUC), EER and AP at both levels, ACC at
the checkpoint's stored threshold (``cal_acc``: calibrated on its validation split, never on the set
scored), and the counts: videos, frames, and the manifest's frames without a face.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

#: the folder of a training job that ``crosseval runs=`` writes into
FOLDER = "crosseval"
JSON = "crosseval.json"
MARKDOWN = "crosseval.md"
#: names a set may not take: the splits training writes into metrics.json and predictions.csv
RESERVED = ("train", "val", "test", "swaps", "test_swaps", "xsource", "xsource_swaps")
#: per set, the flat metrics a sweep report reads (``<set>/<name>``, as a row holds them)
SWEEP_KEYS = ("auc", "video_auc", "eer", "ap")
COUNTS = ("n_videos", "n_no_face", "n_unusable", "n_videos_without_face")


def row_keys(unit: str) -> tuple[str, ...]:
    """The metric keys of a table row, for samples of ``unit`` (frame or clip)."""
    keys = [f"n_{unit}s", *COUNTS]
    for level in ("", "video_"):
        keys += [f"{level}{k}" for k in ("auc", "auc_ci95_lo", "auc_ci95_hi", "people", "eer", "ap")]
        keys += [f"{level}cal_acc", f"{level}cal_balanced_acc"]
    return tuple(keys)


def table_row(name: str, layout: str, root: str | None, metrics: dict, unit: str) -> dict:
    """One set's row: its name, layout and root, then :func:`row_keys` taken from eval's metrics."""
    row = {"set": name, "layout": layout, "root": root}
    row.update({k: metrics.get(k) for k in row_keys(unit)})
    reasons = [metrics[f"{lv}undefined"] for lv in ("", "video_") if metrics.get(f"{lv}undefined")]
    row["undefined"] = reasons[0] if reasons else None
    return row


def _num(v, digits: int = 3, missing: str = "undefined") -> str:
    return (
        missing if v is None else "undefined" if isinstance(v, float) and math.isnan(v) else f"{v:.{digits}f}"
    )


def _auc(row: dict, level: str) -> str:
    auc, lo, hi = (row[f"{level}auc{s}"] for s in ("", "_ci95_lo", "_ci95_hi"))
    if auc is None:
        return "undefined"
    return _num(auc) + ("" if lo is None else f" [{lo:.3f}, {hi:.3f}]")


def markdown(table: dict) -> str:
    """The table as markdown, with what each column means under it."""
    unit, agg = table["unit"], table["video_agg"]
    thr = table["threshold"]
    at = (
        "no ACC: the checkpoint stores no threshold"
        if thr is None
        else f"ACC at its stored threshold, {thr:.3f}"
    )
    lines = [
        "# Cross-dataset evaluation",
        "",
        f"Checkpoint `{table['ckpt_path']}`, the `{table['split']}` split of each set. {at}: "
        f"{table['threshold_note']}; never calibrated on a set scored here.",
        "",
        f"| set | videos | {unit}s | no face | unusable | {unit} AUC [95 % CI] | video AUC [95 % CI] | "
        f"{unit} EER | {unit} AP | video EER | video AP | {unit} ACC | video ACC |",
        "|" + " --- |" * 13,
    ]
    for r in table["rows"]:
        name = r["set"] if r["set"] == r["layout"] else f"{r['set']} ({r['layout']})"
        cells = [name, str(r["n_videos"]), str(r[f"n_{unit}s"]), str(r["n_no_face"]), str(r["n_unusable"])]
        cells += [_auc(r, ""), _auc(r, "video_")]
        cells += [_num(r[f"{lv}{k}"]) for lv in ("", "video_") for k in ("eer", "ap")]
        cells += [_num(r.get(f"{lv}cal_acc"), missing="-") for lv in ("", "video_")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"A video's score is the {agg} of its {unit}s' P(fake)"
        + (" (DeepfakeBench's video AUC)" if agg == "mean" else "")
        + "; AUC intervals: 95 % bootstrap resampling people (a video and its fakes together), not "
        f"{unit}s. EER: where the false-positive and false-negative rates meet (their mean at the "
        "threshold where they are closest). `no face`: frames of the set where the detector found no "
        "face; `unusable`: manifest rows of any status but ok (no face, too small, low confidence, no "
        "landmarks, undecodable); neither is scored, both are counted.",
    ]
    for r in table["rows"]:
        if n := r["n_videos_without_face"]:
            lines.append(f"- {r['set']}: {n} video(s) or image(s) without a usable face, not in the AUCs")
        if r["undefined"]:
            lines.append(f"- {r['set']}: {r['undefined']}")
    return "\n".join(lines) + "\n"


def sweep_metrics(table: dict) -> dict:
    """The flat metrics a sweep report pairs per set: ``<set>/auc`` (frame or clip AUC),
    ``<set>/video_auc``, ``<set>/eer``, ``<set>/ap``."""
    return {f"{r['set']}/{k}": r[k] for r in table["rows"] for k in SWEEP_KEYS}


def write(out_dir: Path, table: dict) -> dict[str, Path]:
    """``crosseval.json`` (the table, every set's full metrics, and the flat ``metrics`` a sweep report
    reads) and ``crosseval.md`` in ``out_dir``."""
    from lmguide.data.cache import atomic_write_text

    paths = {"json": out_dir / JSON, "markdown": out_dir / MARKDOWN}
    data = {**table, "metrics": sweep_metrics(table)}
    atomic_write_text(paths["json"], json.dumps(data, indent=2) + "\n")
    atomic_write_text(paths["markdown"], markdown(table))
    return paths


def read_sweep_metrics(job_dir: Path) -> tuple[dict, list[str]]:
    """``(metrics, sets)`` of a training job's ``crosseval/crosseval.json``, or of a job of a crosseval
    multirun (``crosseval -m ckpt_path=a,b``: ``crosseval.json`` in the job dir itself); empty when
    neither exists. ValueError naming the file when it cannot be read as one."""
    path = next((p for p in (Path(job_dir) / FOLDER / JSON, Path(job_dir) / JSON) if p.exists()), None)
    if path is None:
        return {}, []
    try:
        data = json.loads(path.read_text())
        sets = [str(r["set"]) for r in data["rows"]]
        metrics = data["metrics"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} cannot be read as a crosseval table: {err!r}") from None
    if clash := [s for s in sets if s in RESERVED]:
        raise ValueError(f"{path}: set names {clash} are training's splits")
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: its metrics are no mapping")
    for k, v in metrics.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise ValueError(f"{path}: {k} is {type(v).__name__}, not a number or null")
    return {str(k): None if v is None else float(v) for k, v in metrics.items()}, sets
