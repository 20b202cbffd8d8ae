"""Summarise a Hydra multirun: ``python -m lmguide.sweep_report <multirun dir> [--out DIR]``.

Every job directory of the sweep holds ``.hydra/overrides.yaml`` (its command-line overrides) and, if
it finished, ``metrics.json``. Jobs are grouped by their overrides without ``seed``; each group gets
the mean ± sample std over its seeds of val/test AUC, EER, the attention-in-landmark share and the
wall time. Writes ``sweep_report.md`` (a table), ``sweep_report.csv`` (one row per group, mean and std
columns) and, when ``loss.lambda_lm`` varies, ``sweep_report.png`` (AUC and alignment against λ, one
line per other setting). A job without ``metrics.json`` is listed as failed, one whose ``metrics.json``
cannot be read as broken (with the reason); neither is ever dropped. A metric a job reports as
undefined (null: e.g. AUC on a split of one class) is counted as such, never averaged as a number.

When ``loss.lambda_lm`` varies, every setting with λ > 0 is also compared with its λ = 0 baseline (the
λ = 0 setting with the same other overrides, or the only one), paired by seed, on the test and the
cross-method (face swap) AUC: the mean difference, a 95 % bootstrap interval of it (resampling the
seed pairs) and the two-sided p-value of a paired t-test (``sweep_report_paired.csv``, and a second
table in the markdown).

Also runs at the end of every ``-m`` sweep of ``lmguide.train`` (a Hydra callback, see
:class:`SweepReportCallback`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

METRICS = (
    ("val/auc", "val AUC"),
    ("test/auc", "test AUC"),
    ("val/eer", "val EER"),
    ("test/eer", "test EER"),
    ("val/attn_in_lm", "val attn_in_lm"),
    ("test/attn_in_lm", "test attn_in_lm"),
    ("swaps/auc", "swaps AUC"),
    ("wall_time_s", "time/job (s)"),
)
SEED_KEYS = ("seed",)
LAMBDA_KEY = "loss.lambda_lm"
#: the AUCs compared against λ = 0, paired by seed
PAIRED = (("test/auc", "test AUC"), ("swaps/auc", "swaps AUC (cross-method)"))


@dataclass
class Job:
    path: Path
    overrides: list[str]
    metrics: dict[str, float | None] | None  # None: no usable metrics.json; a value None: undefined
    config_seed: str = "?"  # the seed in the job's config when it was not overridden
    broken: str = ""  # why its metrics.json could not be read

    @property
    def group(self) -> tuple[str, ...]:
        return tuple(o for o in self.overrides if o.split("=", 1)[0].lstrip("+~") not in SEED_KEYS)

    @property
    def seed(self) -> str:
        for o in self.overrides:
            k, _, v = o.partition("=")
            if k.lstrip("+~") in SEED_KEYS:
                return v
        return self.config_seed


@dataclass
class Group:
    overrides: tuple[str, ...]
    jobs: list[Job] = field(default_factory=list)

    @property
    def done(self) -> list[Job]:
        return [j for j in self.jobs if j.metrics is not None]

    def stat(self, key: str) -> tuple[float, float, int]:
        """(mean, sample std (0 for one value), n) of ``key`` over the finished jobs that define it."""
        vals = [
            j.metrics[key]
            for j in self.done
            if j.metrics.get(key) is not None and math.isfinite(j.metrics[key])
        ]
        if not vals:
            return math.nan, math.nan, 0
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)

    def undefined(self, key: str) -> int:
        """How many finished jobs report ``key`` as undefined (null)."""
        return sum(1 for j in self.done if key in j.metrics and j.metrics[key] is None)


def _metric_value(key: str, v):
    """A metrics.json value: a number, None (undefined), or the text of an ``.../undefined`` reason."""
    if v is None or (isinstance(v, str) and key.endswith("undefined")):
        return v
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"{key} is {type(v).__name__}, not a number or null")
    return float(v)


def read_metrics(path: Path) -> dict:
    """The metrics of one job; ValueError naming the file and the problem when it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} cannot be read as JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not an object of metrics")
    try:
        return {str(k): _metric_value(k, v) for k, v in data.items()}
    except TypeError as err:
        raise ValueError(f"{path}: {err}") from None


def read_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job directory under ``sweep_dir`` (the ones holding ``.hydra/overrides.yaml``)."""
    root = Path(sweep_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"sweep directory {root} does not exist")
    jobs = []
    for ov in sorted(root.glob("**/.hydra/overrides.yaml"), key=lambda p: _job_order(p.parent.parent, root)):
        job_dir = ov.parent.parent
        overrides = [str(o) for o in (yaml.safe_load(ov.read_text()) or [])]
        mfile = job_dir / "metrics.json"
        metrics, broken = None, ""
        if mfile.exists():
            try:
                metrics = read_metrics(mfile)
            except ValueError as err:  # one broken job is reported, the others still are
                broken = str(err)
        seed = "?"
        cfg_file = job_dir / ".hydra" / "config.yaml"
        if cfg_file.exists():
            try:
                seed = str((yaml.safe_load(cfg_file.read_text()) or {}).get("seed", "?"))
            except (yaml.YAMLError, AttributeError):
                pass
        jobs.append(Job(job_dir, overrides, metrics, seed, broken))
    if not jobs:
        raise FileNotFoundError(f"no Hydra job directories (.hydra/overrides.yaml) under {root}")
    return jobs


def _job_order(job_dir: Path, root: Path) -> tuple:
    rel = job_dir.relative_to(root).parts
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in rel)


def common_overrides(jobs: list[Job]) -> tuple[str, ...]:
    """Overrides every job shares (seed aside): said once above the table, not in every row."""
    first = jobs[0].group
    return tuple(o for o in first if all(o in j.group for j in jobs[1:]))


def group_jobs(jobs: list[Job]) -> list[Group]:
    """Jobs grouped by the overrides that vary across the sweep (seed aside)."""
    common = set(common_overrides(jobs))
    groups: dict[tuple[str, ...], Group] = {}
    for j in jobs:
        key = tuple(o for o in j.group if o not in common)
        groups.setdefault(key, Group(key)).jobs.append(j)
    return list(groups.values())


def _label(overrides: tuple[str, ...]) -> str:
    return " ".join(overrides) if overrides else "(no overrides)"


def _fmt(mean: float, std: float, n: int, digits: int = 3, undefined: int = 0) -> str:
    note = f" ({undefined} undefined)" if undefined else ""
    if n == 0:
        return "undefined" if undefined else "–"
    return (f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}") + note


def markdown(groups: list[Group], jobs: list[Job]) -> str:
    cols = ["setting", "seeds"] + [name for _, name in METRICS]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for g in groups:
        seeds = ",".join(j.seed for j in g.done) or "–"
        cells = [
            _fmt(*g.stat(k), digits=0 if k == "wall_time_s" else 3, undefined=g.undefined(k))
            for k, _ in METRICS
        ]
        lines.append("| " + " | ".join([_label(g.overrides), seeds, *cells]) + " |")
    failed = [j for j in jobs if j.metrics is None]
    n_done = len(jobs) - len(failed)
    common = common_overrides(jobs)
    lines.append("")
    if common:
        lines.append(f"Every job also ran with: `{' '.join(common)}`.")
    lines.append(
        f"{len(jobs)} jobs, {n_done} finished; mean ± sample std over seeds (undefined values, e.g. an AUC "
        "on a split of one class, are counted, not averaged)."
    )
    for j in failed:
        if j.broken:
            lines.append(
                f"- broken (unreadable metrics.json): `{j.path}` ({' '.join(j.overrides)}): {j.broken}"
            )
        else:
            lines.append(f"- failed or unfinished (no metrics.json): `{j.path}` ({' '.join(j.overrides)})")
    comparisons = paired_comparisons(groups)
    if comparisons:
        lines += ["", paired_markdown(comparisons)]
    return "\n".join(lines) + "\n"


# -- guided settings against λ = 0, paired by seed ------------------------------------------------------


def paired_t_test(diffs: list[float]) -> dict:
    """Two-sided paired t-test of the mean of ``diffs`` against 0: ``{"t", "df", "p"}``.

    ``t = mean / (s / sqrt(n))`` with ``s`` the sample standard deviation, ``df = n - 1``, ``p`` from
    Student's t distribution. Undefined (None, with ``reason``) for fewer than two pairs, or when every
    difference is the same (no spread to test against)."""
    from scipy.special import stdtr

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
    t = mean / (sd / math.sqrt(n))
    return {"t": t, "df": n - 1, "p": float(2 * stdtr(n - 1, -abs(t)))}


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
    v = _value(g.overrides, LAMBDA_KEY)
    try:
        return None if v is None else float(v)
    except ValueError:
        return None


def _without_lambda(g: Group) -> tuple[str, ...]:
    return tuple(o for o in g.overrides if o.partition("=")[0].lstrip("+~") != LAMBDA_KEY)


def paired_comparisons(groups: list[Group]) -> list[Comparison]:
    """Every λ > 0 setting against its λ = 0 baseline, paired by seed, for each of :data:`PAIRED`."""
    bases = [g for g in groups if _lambda(g) == 0]
    if not bases:
        return []
    out = []
    for g in groups:
        lam = _lambda(g)
        if lam is None or lam == 0:
            continue
        same = [b for b in bases if _without_lambda(b) == _without_lambda(g)]
        base = same[0] if same else (bases[0] if len(bases) == 1 else None)
        if base is None:
            continue
        for key, name in PAIRED:
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
                    _label(g.overrides),
                    _label(base.overrides),
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


def paired_markdown(comparisons: list[Comparison]) -> str:
    lines = [
        "Against λ = 0, paired by seed (Δ = setting − baseline; interval: 95 % bootstrap over the seed "
        "pairs; p: two-sided paired t-test):",
        "",
        "| setting | baseline | metric | pairs | mean Δ AUC | 95 % interval | p |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in comparisons:
        mean = "undefined" if c.mean is None else f"{c.mean:+.3f}"
        ci = "–" if c.ci is None else f"[{c.ci[0]:+.3f}, {c.ci[1]:+.3f}]"
        p = c.test.get("reason", "undefined") if c.test["p"] is None else f"{c.test['p']:.3f}"
        pairs = f"{len(c.seeds)} ({','.join(c.seeds)})" + (f"; {c.note}" if c.note else "")
        lines.append(f"| {c.setting} | {c.baseline} | {c.metric} | {pairs} | {mean} | {ci} | {p} |")
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
                "" if c.test["t"] is None else f"{c.test['t']:.6g}",
                "" if c.test["p"] is None else f"{c.test['p']:.6g}",
                c.note or c.test.get("reason", ""),
            ]
        )
    return buf.getvalue()


def csv_text(groups: list[Group]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["setting", "n_finished", "n_jobs"]
    for k, _ in METRICS:
        header += [f"{k}_mean", f"{k}_std", f"{k}_undefined"]
    w.writerow(header)
    for g in groups:
        row: list = [_label(g.overrides), len(g.done), len(g.jobs)]
        for k, _ in METRICS:
            mean, std, n = g.stat(k)
            row += ["" if n == 0 else f"{mean:.6g}", "" if n == 0 else f"{std:.6g}", g.undefined(k)]
        w.writerow(row)
    return buf.getvalue()


def _value(overrides: tuple[str, ...], key: str) -> str | None:
    for o in overrides:
        k, _, v = o.partition("=")
        if k.lstrip("+~") == key:
            return v
    return None


def plot(groups: list[Group], path: Path, key: str = "loss.lambda_lm") -> Path | None:
    """AUC and attention-in-landmark share against λ, one line per setting of the other overrides."""
    points = [(g, _value(g.overrides, key)) for g in groups]
    points = [(g, float(v)) for g, v in points if v is not None and g.done]
    if len({v for _, v in points}) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[float, Group]]] = {}
    for g, v in points:
        rest = tuple(o for o in g.overrides if o.partition("=")[0].lstrip("+~") != key)
        lines.setdefault(_label(rest), []).append((v, g))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = (("val/auc", "val AUC"), ("val/attn_in_lm", "val attn_in_lm"))
    for (metric, name), ax in zip(panels, axes, strict=True):
        for label, pts in lines.items():
            pts.sort(key=lambda p: p[0])
            xs = [x for x, _ in pts]
            stats = [g.stat(metric) for _, g in pts]
            ax.errorbar(xs, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3,
                        label=label if len(lines) > 1 else None)  # fmt: skip
        ax.set_xlabel("λ (loss.lambda_lm)")
        ax.set_ylabel(name)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.grid(alpha=0.3)
    if len(lines) > 1:
        axes[0].legend(fontsize=7)
    fig.suptitle("mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def results_page(sweep_dir: str | Path, groups: list[Group], jobs: list[Job], command: str) -> str:
    """The generated results page (``--results docs/results.md``): how it was made, then the tables."""
    import datetime
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    head = [
        "# Results",
        "",
        "<!-- generated by lmguide.sweep_report --results: do not edit by hand, re-run the command -->",
        "",
        f"Generated on {when}" + (f" at commit {commit}" if commit else "") + f" from `{sweep_dir}` by",
        "",
        "```bash",
        command,
        "```",
        "",
        "Per setting, mean ± sample std over seeds (AUCs of single runs, with their 95 % bootstrap intervals "
        "resampling people, are in each job's `metrics.json`); `swaps AUC` is the cross-method test "
        "(`data=demo_swaps`: the test people against landmark face swaps between them).",
        "",
    ]
    return "\n".join(head) + "\n" + markdown(groups, jobs)


def report(
    sweep_dir: str | Path, out: str | Path | None = None, results: str | Path | None = None, command: str = ""
) -> dict[str, Path]:
    """Write the markdown table, the CSV and the plot (and, with ``results``, the results page); returns
    their paths."""
    jobs = read_jobs(sweep_dir)
    groups = group_jobs(jobs)
    out_dir = Path(out) if out else Path(sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out_dir / "sweep_report.md", "csv": out_dir / "sweep_report.csv"}
    written["markdown"].write_text(markdown(groups, jobs))
    written["csv"].write_text(csv_text(groups))
    comparisons = paired_comparisons(groups)
    if comparisons:
        written["paired"] = out_dir / "sweep_report_paired.csv"
        written["paired"].write_text(paired_csv(comparisons))
    png = plot(groups, out_dir / "sweep_report.png")
    if png:
        written["plot"] = png
    if results:
        written["results"] = Path(results)
        written["results"].parent.mkdir(parents=True, exist_ok=True)
        cmd = command or f"python -m lmguide.sweep_report {sweep_dir} --results {results}"
        written["results"].write_text(results_page(sweep_dir, groups, jobs, cmd))
    return written


class SweepReportCallback(Callback):
    """Hydra callback: writes the sweep report into the sweep directory when a multirun ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        import logging

        try:
            paths = report(config.hydra.sweep.dir)
        except (OSError, ValueError) as err:  # a report problem must not fail the finished sweep
            logging.getLogger(__name__).warning("sweep report not written: %s", err)
            return
        print(Path(paths["markdown"]).read_text())
        print("sweep report: " + ", ".join(str(p) for p in paths.values()))


def main(argv: list[str] | None = None) -> dict[str, Path]:
    p = argparse.ArgumentParser(prog="python -m lmguide.sweep_report", description=__doc__.splitlines()[0])
    p.add_argument("sweep_dir", help="a Hydra multirun directory (logs/train/multiruns/<date>)")
    p.add_argument("--out", default=None, help="where to write (default: the sweep directory)")
    p.add_argument("--results", default=None, help="also write the results page here (docs/results.md)")
    p.add_argument(
        "--command", default="", help="the command that made the sweep, quoted on the results page"
    )
    args = p.parse_args(argv)
    try:
        paths = report(args.sweep_dir, args.out, args.results, args.command)
    except FileNotFoundError as err:  # a missing or empty sweep directory: one line, exit code 1
        from lmguide.cli import fail

        fail(str(err))
    print(paths["markdown"].read_text())
    for k, v in paths.items():
        print(f"{k}: {v}")
    return paths


if __name__ == "__main__":
    main()
