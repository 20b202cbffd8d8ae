"""Every guided setting (λ > 0) of a sweep against its λ = 0 baseline, paired by seed: the mean
difference of the test and cross-method AUC, a bootstrap interval and a paired t-test. A variant (a
setting that adds overrides to another at the same λ, e.g. ``data.image_size=160``) is also compared
with the setting it varies."""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass

from lmguide.sweeps.jobs import LAMBDA_KEY, Group, group_label, override_value, paired_metrics


def paired_t_test(diffs: list[float]) -> dict:
    """Two-sided paired t-test of the mean of ``diffs`` against 0: ``{"t", "df", "p", "ci"}``.

    ``t = mean / (s / sqrt(n))`` with ``s`` the sample standard deviation, ``df = n - 1``, ``p`` from
    Student's t distribution; ``ci`` is the 95 % t interval ``mean ± t_0.975(df) · s / sqrt(n)``, which
    excludes 0 exactly when ``p < 0.05``. Undefined (None, with ``reason``) for fewer than two pairs, or
    when every difference is the same (no spread to test against)."""
    from scipy.special import stdtr, stdtrit

    n = len(diffs)
    if n < 2:
        return {"t": None, "df": n - 1, "p": None, "reason": f"undefined: {n} pair(s), a paired test needs 2"}
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if sd == 0:
        return {
            "t": None,
            "df": n - 1,
            "p": None,
            "reason": "undefined: every pair differs by the same amount",
        }
    se = sd / math.sqrt(n)
    t, half = mean / se, float(stdtrit(n - 1, 0.975)) * se
    return {"t": t, "df": n - 1, "p": float(2 * stdtr(n - 1, -abs(t))), "ci": (mean - half, mean + half)}


def bootstrap_mean(values: list[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap interval ``(lo, hi)`` of the mean of ``values`` (None for no values)."""
    import numpy as np

    if not values:
        return None
    v = np.asarray(values, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    means = v[idx].mean(1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


@dataclass
class Comparison:
    setting: str
    baseline: str
    metric: str
    seeds: list[str]
    diffs: list[float]
    mean: float | None
    ci: tuple[float, float] | None
    test: dict
    note: str = ""


def _lambda(g: Group) -> float | None:
    v = override_value(g.overrides, LAMBDA_KEY)
    try:
        return None if v is None else float(v)
    except ValueError:
        return None


def _without_lambda(g: Group) -> tuple[str, ...]:
    return tuple(o for o in g.overrides if o.partition("=")[0].lstrip("+~") != LAMBDA_KEY)


def _compare(g: Group, base: Group) -> list[Comparison]:
    """``g`` against ``base``, paired by seed, for each of :func:`~lmguide.sweeps.jobs.paired_metrics`
    (training's AUCs, and each crosseval set's) that either reports."""
    out = []
    for key, name in paired_metrics(g.jobs + base.jobs):
        mine = {j.seed: j.metrics.get(key) for j in g.done}
        theirs = {j.seed: j.metrics.get(key) for j in base.done}
        seeds = sorted(set(mine) & set(theirs), key=lambda s: (len(s), s))
        if not any(key in j.metrics for j in g.done + base.done):
            continue
        undefined = [s for s in seeds if mine[s] is None or theirs[s] is None]
        seeds = [s for s in seeds if s not in undefined]
        diffs = [mine[s] - theirs[s] for s in seeds]
        note = f"seeds {','.join(undefined)} undefined" if undefined else ""
        out.append(
            Comparison(
                group_label(g.overrides),
                group_label(base.overrides),
                name,
                seeds,
                diffs,
                statistics.fmean(diffs) if diffs else None,
                bootstrap_mean(diffs),
                paired_t_test(diffs),
                note,
            )
        )
    return out


def _variant_of(g: Group, groups: list[Group]) -> Group | None:
    """The setting ``g`` adds overrides to at the same λ (the one it shares most with), if any: a
    variant such as ``... data.image_size=160`` is compared with the same run at the default size."""
    mine = set(g.overrides)
    lam = _lambda(g)
    parents = [h for h in groups if h is not g and _lambda(h) == lam and set(h.overrides) < mine]
    return max(parents, key=lambda h: len(h.overrides), default=None)


def _baseline(g: Group, bases: list[Group]) -> Group | None:
    """The λ = 0 setting ``g`` is compared with: the one with the same other overrides; else the only
    one; else the one whose overrides ``g`` extends most (``loss=kl`` at λ 1 against the plain λ = 0
    run when a λ = 0 variant such as ``model.landmark_channels=true`` also ran)."""
    same = [b for b in bases if _without_lambda(b) == _without_lambda(g)]
    if same or len(bases) == 1:
        return (same or bases)[0]
    mine = set(_without_lambda(g))
    below = [b for b in bases if set(_without_lambda(b)) <= mine]
    return max(below, key=lambda b: len(b.overrides), default=None)


def comparison_pairs(groups: list[Group]) -> list[tuple[Group, Group]]:
    """``(setting, baseline)``: every λ > 0 setting with its λ = 0 baseline (:func:`_baseline`); then
    every variant (a setting that adds overrides to another at the same λ, λ = 0 included: e.g. the
    landmark input channels without guidance; or in a sweep that does not vary λ, e.g. ``augment=robust``
    against the job without it) with that setting. The seed-paired and the per-face
    comparisons both use it."""
    chosen = next((g for g in groups if g.is_baseline), None)
    if chosen is not None:  # sweep_report --baseline: every setting against it, and each variant
        against = [(g, chosen) for g in groups if g is not chosen]
        return against + [
            (g, p) for g in groups if (p := _variant_of(g, groups)) is not None and p is not chosen
        ]
    bases = [g for g in groups if _lambda(g) == 0]
    out, variants = [], []
    for g in groups:
        lam = _lambda(g)  # None: λ is not varied (every job shares it): settings compare as variants
        if (parent := _variant_of(g, groups)) is not None:
            variants.append((g, parent))
        if lam is None or lam == 0 or not bases:
            continue
        if (base := _baseline(g, bases)) is not None:
            out.append((g, base))
    return out + variants


def paired_comparisons(groups: list[Group]) -> list[Comparison]:
    """:func:`comparison_pairs`, paired by seed, for each of :func:`~lmguide.sweeps.jobs.paired_metrics`."""
    return [c for g, base in comparison_pairs(groups) for c in _compare(g, base)]


def paired_markdown(comparisons: list[Comparison]) -> str:
    zero = any(f"{LAMBDA_KEY}=0" in c.baseline.split() for c in comparisons)
    lead = "Against λ = 0" if zero else "Each setting against its baseline (second column)"
    lines = [
        f"{lead}, paired by seed (Δ = setting − baseline; p: two-sided paired t-test; t interval: "
        "its 95 % interval, which excludes 0 exactly when p < 0.05; bootstrap: 95 % percentile interval "
        "resampling the seed pairs, too narrow with few pairs: 3 pairs give at most 10 distinct means, so "
        "read the t interval); a variant (a setting that adds overrides to another at the same λ) is also "
        "compared with that setting. Each row is one test of many: at p < 0.05, about one in 20 comparisons "
        "of settings that do not differ shows a difference.",
        "",
        "| setting | baseline | metric | pairs | mean Δ AUC | 95 % t interval | 95 % bootstrap | p |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in comparisons:
        mean = "undefined" if c.mean is None else f"{c.mean:+.3f}"
        ci = "–" if c.ci is None else f"[{c.ci[0]:+.3f}, {c.ci[1]:+.3f}]"
        tci = "–" if c.test.get("ci") is None else f"[{c.test['ci'][0]:+.3f}, {c.test['ci'][1]:+.3f}]"
        p = c.test.get("reason", "undefined") if c.test["p"] is None else f"{c.test['p']:.3f}"
        pairs = f"{len(c.seeds)} ({','.join(c.seeds)})" + (f"; {c.note}" if c.note else "")
        lines.append(f"| {c.setting} | {c.baseline} | {c.metric} | {pairs} | {mean} | {tci} | {ci} | {p} |")
    return "\n".join(lines) + "\n"


def paired_csv(comparisons: list[Comparison]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "setting",
            "baseline",
            "metric",
            "pairs",
            "seeds",
            "mean_diff",
            "ci95_lo",
            "ci95_hi",
            "t_ci95_lo",
            "t_ci95_hi",
            "t",
            "p",
            "note",
        ]
    )
    for c in comparisons:
        w.writerow(
            [
                c.setting,
                c.baseline,
                c.metric,
                len(c.seeds),
                " ".join(c.seeds),
                "" if c.mean is None else f"{c.mean:.6g}",
                "" if c.ci is None else f"{c.ci[0]:.6g}",
                "" if c.ci is None else f"{c.ci[1]:.6g}",
                "" if c.test.get("ci") is None else f"{c.test['ci'][0]:.6g}",
                "" if c.test.get("ci") is None else f"{c.test['ci'][1]:.6g}",
                "" if c.test["t"] is None else f"{c.test['t']:.6g}",
                "" if c.test["p"] is None else f"{c.test['p']:.6g}",
                c.note or c.test.get("reason", ""),
            ]
        )
    return buf.getvalue()
