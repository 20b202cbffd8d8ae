"""P(fake) per source: do the reals of one package look fake to the model?

:func:`source_scores` gathers, from a run's scored sets, each source's scores by kind (``real``,
``self-blend``, ``swap``), each face once (a real face scored in both the test split and its swap set is
one face); :func:`plot_source_scores` draws one row per source, with the threshold marked, into the run's
``curves/sources.png`` and writes the counts and medians to ``curves/sources.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmguide.evaluation.predictions import kinds_of

#: the kinds of a scored face (its ``kind`` field: :attr:`lmguide.data.datasets.FaceDataset.item_kinds`)
KINDS = ("real", "fake", "self-blend", "swap")
FILE = "sources"


def source_scores(scored: dict[str, dict], held_out=()) -> dict[str, dict]:
    """``{source: {"held_out": bool, "sets": [set names], kind: np.ndarray of P(fake)}}``, each face
    (split-independent key) once. Faces without a recorded source count as ``unknown``."""
    seen: set[tuple[str, str]] = set()
    out: dict[str, dict] = {}
    for name, res in scored.items():
        sources = res.get("source") or [""] * len(res["key"])
        for key, kind, p, src in zip(res["key"], kinds_of(res), res["prob"].tolist(), sources, strict=True):
            src = src or "unknown"
            if (src, key) in seen:
                continue
            seen.add((src, key))
            entry = out.setdefault(src, {"held_out": src in held_out, "sets": [], **{k: [] for k in KINDS}})
            if name not in entry["sets"]:
                entry["sets"].append(name)
            entry[kind].append(p)
    for entry in out.values():
        for k in KINDS:
            entry[k] = np.asarray(entry[k], dtype=float)
    return dict(sorted(out.items()))


def summary(per_source: dict[str, dict], threshold: float | None) -> dict:
    """JSON-ready counts, medians and, at ``threshold``, the share of each kind called fake."""
    out = {}
    for src, e in per_source.items():
        row: dict = {"held_out": e["held_out"], "sets": e["sets"]}
        for k in KINDS:
            v = np.asarray(e.get(k, ()), dtype=float)
            row[k] = {"n": len(v), "median": float(np.median(v)) if len(v) else None}
            if threshold is not None and len(v):
                row[k]["called_fake"] = float((v >= threshold).mean())
        out[src] = row
    return {"threshold": threshold, "sources": out}


def plot_source_scores(scored: dict[str, dict], threshold: float | None, out_dir: Path, held_out=()) -> Path:
    """``sources.png`` (one row per source: histograms of P(fake) by kind, threshold as a line) and
    ``sources.json`` (:func:`summary`) in ``out_dir``; the PNG's path."""
    from lmguide.viz.figures import pyplot

    plt = pyplot()
    per = source_scores(scored, held_out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{FILE}.json").write_text(json.dumps(summary(per, threshold), indent=2) + "\n")
    n = max(len(per), 1)
    fig, axes = plt.subplots(n, 1, figsize=(6, 1.8 * n + 0.6), dpi=100, squeeze=False, sharex=True)
    bins = np.linspace(0, 1, 26)
    colours = {"real": "tab:green", "fake": "tab:orange", "self-blend": "tab:red", "swap": "tab:purple"}
    for ax, (src, e) in zip(axes[:, 0], per.items(), strict=False):
        for k in KINDS:
            if len(e.get(k, ())):
                ax.hist(
                    e[k], bins=bins, alpha=0.5, color=colours[k], label=f"{k} ({len(e[k])})", density=True
                )
        if threshold is not None:
            ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3f}")
        med = f", reals' median {np.median(e['real']):.2f}" if len(e["real"]) else ""
        tag = " (held out: never seen in training)" if e["held_out"] else f" ({'/'.join(e['sets'])})"
        ax.set_title(f"{src}{tag}{med}", fontsize=8)
        ax.legend(fontsize=6, loc="upper center")
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("P(fake)")
    fig.tight_layout()
    path = out_dir / f"{FILE}.png"
    fig.savefig(path)
    plt.close(fig)
    return path
