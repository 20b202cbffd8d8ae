"""Each guided setting of a sweep against its baseline on the same faces, from every job's
``predictions.csv``: per seed, the two jobs' rows matched by split and key and compared with the
clustered DeLong test (people as clusters); across seeds, a hierarchical bootstrap (seeds, then people);
and the power of the comparison: its minimum detectable difference, and the seeds a difference of 0.02
would need. A job without ``predictions.csv`` (a run older than the file) is named, never fatal. A job
that crosseval scored (``crosseval/predictions.csv``, a split per data set) is compared on each set's
faces too."""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmguide.evaluation.auc import delong_test, resampled_auc
from lmguide.evaluation.crosseval_table import FOLDER
from lmguide.evaluation.power import min_detectable_difference, seed_mdd, seeds_needed
from lmguide.evaluation.predictions import NAME, read_predictions
from lmguide.sweeps.jobs import Group, Job, crosseval_sets, group_label
from lmguide.sweeps.paired import comparison_pairs

#: the predictions.csv splits compared on faces, with their names in the tables
SPLITS = (
    ("val", "val AUC"),
    ("test", "test AUC"),
    ("swaps", "swaps AUC (cross-method)"),
    ("xsource", "xsource AUC (unseen source)"),
    ("xsource_swaps", "xsource swaps AUC"),
)
#: the difference whose seeds are counted
TARGET = 0.02
#: below this many effective people, the clustered figures are flagged as resting on too few clusters
FEW_PEOPLE = 20


def effective_people(people) -> float:
    """Kish's effective number of clusters, (Σ n_i)² / Σ n_i² over the people's face counts n_i: the
    number of equally sized people that carry as much independent information. 13 people of whom two
    hold 730 of 752 faces count as 1.8."""
    counts = np.unique(np.asarray(list(people)), return_counts=True)[1].astype(float)
    return float(counts.sum() ** 2 / np.square(counts).sum()) if len(counts) else 0.0


@dataclass
class SeedPair:
    """One seed's two jobs on their shared faces: labels, P(fake) of setting and baseline, people."""

    seed: str
    labels: np.ndarray
    a: np.ndarray
    b: np.ndarray
    people: list[str]
    test: dict  # delong_test(labels, a, b, clusters=people)


@dataclass
class FaceComparison:
    setting: str
    baseline: str
    metric: str
    pairs: list[SeedPair]
    boot: dict | None  # hierarchical_bootstrap
    notes: list[str] = field(default_factory=list)

    @property
    def deltas(self) -> list[float]:
        return [p.test["delta"] for p in self.pairs if p.test["delta"] is not None]

    @property
    def effective_people(self) -> float | None:
        """Of the first seed's faces (every seed is scored on the same faces)."""
        return effective_people(self.pairs[0].people) if self.pairs else None

    @property
    def seed_sd(self) -> float | None:
        d = self.deltas
        return statistics.stdev(d) if len(d) > 1 else None

    @property
    def mdd_one_seed(self) -> float | None:
        """The smallest true Δ one seed's DeLong test detects (α 0.05, 80 %), at the median se."""
        se = [p.test["se"] for p in self.pairs if p.test.get("se")]
        return min_detectable_difference(statistics.median(se)) if se else None

    @property
    def mdd_seeds(self) -> float | None:
        """That of the paired t-test over these seeds, from the spread of their Δ."""
        sd = self.seed_sd
        return None if sd is None else seed_mdd(sd, len(self.deltas))

    @property
    def mdd_hierarchical(self) -> float | None:
        """That of a z test with the hierarchical bootstrap's se: seeds and faces both sampled."""
        return min_detectable_difference((self.boot or {}).get("se"))

    @property
    def seeds_for_target(self) -> int | None:
        sd = self.seed_sd
        return None if sd is None else seeds_needed(sd, TARGET)


def hierarchical_bootstrap(pairs: list[SeedPair], n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    """Percentile interval of the mean Δ AUC over seeds, resampling seeds, then people.

    Each replicate draws as many seeds as there are, with replacement, and as many people; every seed
    is scored on the same faces, so one draw of people serves every seed of a replicate (the seeds and
    the people are crossed, not nested), and a person drawn twice counts twice in each seed's AUCs
    (:func:`~lmguide.evaluation.auc.resampled_auc`). A replicate's Δ is the mean over its drawn seeds of
    AUC(setting) - AUC(baseline); a seed whose draw lacks a class is left out of that mean, a replicate
    with none is dropped (``dropped``). Returns ``{"mean", "lo", "hi", "se", "seeds", "people",
    "n_boot", "dropped"}``, or None without a seed whose Δ is defined."""
    used = [p for p in pairs if p.test["delta"] is not None]
    if not used:
        return None
    people = sorted({q for p in used for q in p.people})
    index = {q: i for i, q in enumerate(people)}
    rng = np.random.default_rng(seed)
    n_seeds, n_people = len(used), len(people)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot).T  # (S, B)
    people_counts = rng.multinomial(n_people, np.full(n_people, 1 / n_people), size=n_boot)  # (B, P)
    diffs = []
    for p in used:
        cl = np.array([index[q] for q in p.people])
        diffs.append(
            resampled_auc(p.a, p.labels, cl, people_counts) - resampled_auc(p.b, p.labels, cl, people_counts)
        )
    diffs = np.stack(diffs)  # (S, B)
    ok = ~np.isnan(diffs)
    weight = seed_counts * ok
    total = weight.sum(0)
    reps = (np.where(ok, diffs, 0.0) * weight).sum(0)[total > 0] / total[total > 0]
    a = (1 - level) / 2
    lo, hi = (float(v) for v in np.quantile(reps, [a, 1 - a])) if len(reps) else (None, None)
    return {
        "mean": statistics.fmean(p.test["delta"] for p in used),
        "lo": lo,
        "hi": hi,
        "se": float(np.std(reps, ddof=1)) if len(reps) > 1 else None,
        "seeds": n_seeds,
        "people": n_people,
        "n_boot": n_boot,
        "dropped": float(1 - len(reps) / n_boot),
    }


def _predictions(job: Job, cache: dict[Path, dict | str]) -> dict | str:
    """The job's predictions by split, or why there are none."""
    if job.path not in cache:
        f = job.path / NAME
        cross = job.path / FOLDER / NAME  # crosseval's: one split per data set, named after it
        try:
            found = read_predictions(f) if f.exists() else None
            if job.sets and cross.exists():
                found = (found or {}) | {s: v for s, v in read_predictions(cross).items() if s in job.sets}
            cache[job.path] = f"no {NAME} (an older run)" if found is None else found
        except (OSError, UnicodeDecodeError, ValueError) as err:
            cache[job.path] = f"unreadable {NAME}: {err}"
    return cache[job.path]


def match_faces(setting: dict[str, list], baseline: dict[str, list]):
    """``(labels, p_setting, p_baseline, people)`` on the keys both hold, in the setting's order; a key
    whose label differs between the two is a ValueError (the runs did not score the same faces)."""
    where = {k: i for i, k in enumerate(baseline["key"])}
    rows = [(i, where[k]) for i, k in enumerate(setting["key"]) if k in where]
    if not rows:
        raise ValueError("no face in common")
    mine, theirs = (np.array(ix) for ix in zip(*rows, strict=True))
    labels = np.array(setting["label"])[mine]
    if (bad := int((labels != np.array(baseline["label"])[theirs]).sum())) > 0:
        raise ValueError(f"{bad} shared keys carry different labels")
    people = [setting["person"][i] for i in mine]
    return labels, np.array(setting["p_fake"])[mine], np.array(baseline["p_fake"])[theirs], people


def _compare(g: Group, base: Group, split: str, name: str, cache: dict) -> FaceComparison | None:
    if not any(f"{split}/auc" in (j.metrics or {}) for j in g.done + base.done):
        return None  # no job scored this split (a sweep without a held-out source, say)
    mine, theirs = {j.seed: j for j in g.done}, {j.seed: j for j in base.done}
    seeds = sorted(set(mine) & set(theirs), key=lambda s: (len(s), s))
    pairs, missing, notes = [], {}, []
    for s in seeds:
        pa, pb = _predictions(mine[s], cache), _predictions(theirs[s], cache)
        if isinstance(pa, str) or isinstance(pb, str):
            missing.setdefault(pa if isinstance(pa, str) else pb, []).append(s)
            continue
        if split not in pa or split not in pb:
            continue
        try:
            labels, a, b, people = match_faces(pa[split], pb[split])
        except ValueError as err:
            notes.append(f"seed {s}: {err}")
            continue
        if len(labels) < max(len(pa[split]["key"]), len(pb[split]["key"])):
            notes.append(f"seed {s}: {len(labels)} faces in common of {len(pa[split]['key'])}")
        pairs.append(SeedPair(s, labels, a, b, people, delong_test(labels, a, b, clusters=people)))
    notes = [f"seeds {','.join(v)}: {why}" for why, v in missing.items()] + notes
    if not pairs and not notes:
        return None  # neither job scored this split
    return FaceComparison(
        group_label(g.overrides),
        group_label(base.overrides),
        name,
        pairs,
        hierarchical_bootstrap(pairs),
        notes,
    )


def face_comparisons(groups: list[Group]) -> list[FaceComparison]:
    """Every pair of :func:`~lmguide.sweeps.paired.comparison_pairs`, for each of :data:`SPLITS` and each
    data set crosseval scored the jobs on."""
    cache: dict = {}
    out = []
    for g, base in comparison_pairs(groups):
        sets = crosseval_sets(g.jobs + base.jobs)
        splits = [*SPLITS, *[(s, f"{s} AUC (crosseval)") for s in sets]]
        found = [c for split, name in splits if (c := _compare(g, base, split, name, cache)) is not None]
        if (
            len(found) > 1
            and not any(c.pairs for c in found)
            and all(c.notes == found[0].notes for c in found)
        ):
            found[0].metric = " / ".join(c.metric for c in found)  # old runs only: said once, not per split
            found = found[:1]
        out += found
    return out


def _num(v, fmt: str = "+.3f") -> str:
    return "–" if v is None else format(v, fmt)


def _seed_cell(t: dict) -> str:
    if t["delta"] is None:
        return "undefined"
    return f"{t['delta']:+.3f}" + ("" if t["p"] is None else f" ({t['p']:.3f})")


def faces_markdown(comparisons: list[FaceComparison]) -> str:
    lines = [
        f"On the same faces (each job's `{NAME}`, rows matched by split and key): per seed, Δ AUC = "
        "setting − baseline and the p of the clustered DeLong test (Obuchowski 1997: a person's faces are "
        "one cluster); across seeds, the mean Δ with a 95 % hierarchical bootstrap interval (seeds "
        "resampled, then people: one draw for every seed, which are scored on the same faces). Power at "
        "α = 0.05 and 80 %: the minimum detectable difference (MDD) of one seed's DeLong test (at the "
        "median se), of the paired t-test over these seeds (from the spread of their Δ: these test faces "
        "held fixed) and of the hierarchical interval's se (seeds and faces sampled), and the seeds that "
        f"t-test would need to detect a Δ of {TARGET} on these faces.",
        "",
        "| setting | baseline | metric | seeds | people (effective) | Δ per seed (DeLong p) | mean Δ "
        f"| 95 % hierarchical | MDD: 1 seed · t · hier. | seeds for {TARGET} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    few = []
    for c in comparisons:
        per = "; ".join(f"{p.seed}: {_seed_cell(p.test)}" for p in c.pairs) or "–"
        seeds = f"{len(c.pairs)}" + "".join(f"; {n}" for n in c.notes)
        b = c.boot or {}
        ci = "–" if b.get("lo") is None else f"[{b['lo']:+.3f}, {b['hi']:+.3f}]"
        need = c.seeds_for_target
        eff = c.effective_people
        people = "–" if eff is None else f"{len(set(c.pairs[0].people))} ({eff:.1f})"
        if eff is not None and eff < FEW_PEOPLE:
            few.append(f"{c.metric} ({eff:.1f})")
        cells = [c.setting, c.baseline, c.metric, seeds, people, per, _num(b.get("mean")), ci]
        mdd = " · ".join(_num(v, ".3f") for v in (c.mdd_one_seed, c.mdd_seeds, c.mdd_hierarchical))
        cells += [mdd, "–" if need is None else str(need)]
        lines.append("| " + " | ".join(cells) + " |")
    if few:
        lines += [
            "",
            f"**Few people.** {', '.join(dict.fromkeys(few))}: fewer than {FEW_PEOPLE} effective people "
            "(Kish: (Σ faces)² / Σ faces² per person). A clustered se estimated from so few clusters is "
            "biased low, so the per-seed DeLong p values are too small; and a few people who hold most of "
            "the faces make the hierarchical interval wide and lopsided (a draw without them changes every "
            "AUC). Read the paired t interval over seeds above, which holds these faces fixed.",
        ]
    return "\n".join(lines) + "\n"


def _g(v) -> str:
    return "" if v is None else f"{v:.6g}"


def faces_csv(comparisons: list[FaceComparison]) -> str:
    """One row per seed (its DeLong test) and one ``all`` row per comparison (the mean Δ, the
    hierarchical interval and its se, and the power figures)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["setting", "baseline", "metric", "seed", "faces", "people", "effective_people", "delta", "se"]
        + ["p", "ci95_lo", "ci95_hi", "mdd_one_seed", "mdd_seeds", "mdd_hierarchical", f"seeds_for_{TARGET}"]
        + ["note"]
    )
    for c in comparisons:
        for p in c.pairs:
            t = p.test
            lo, hi = t["ci"] or (None, None)
            mdd = min_detectable_difference(t["se"]) if t["se"] else None
            row = [
                p.seed,
                len(p.labels),
                t["clusters"],
                _g(effective_people(p.people)),
                _g(t["delta"]),
                _g(t["se"]),
                _g(t["p"]),
                _g(lo),
                _g(hi),
            ]
            w.writerow([c.setting, c.baseline, c.metric, *row, _g(mdd), "", "", "", t.get("reason", "")])
        b = c.boot or {}
        need = c.seeds_for_target
        row = [
            "all",
            sum(len(p.labels) for p in c.pairs),
            b.get("people", ""),
            _g(c.effective_people),
            _g(b.get("mean")),
            _g(b.get("se")),
        ]
        row += [
            "",
            _g(b.get("lo")),
            _g(b.get("hi")),
            _g(c.mdd_one_seed),
            _g(c.mdd_seeds),
            _g(c.mdd_hierarchical),
        ]
        w.writerow([c.setting, c.baseline, c.metric, *row, "" if need is None else need, "; ".join(c.notes)])
    return buf.getvalue()
