"""Summarise a Hydra multirun: ``python -m lmguide.sweep_report <multirun dir> [--out DIR]``.

Every job directory of the sweep holds ``.hydra/overrides.yaml`` (its command-line overrides) and, if
it finished, ``metrics.json``. Jobs are grouped by their overrides without ``seed``; each group gets
the mean ± sample std over its seeds of val/test AUC, EER, the attention-in-landmark share and the
wall time. Writes ``sweep_report.md`` (a table), ``sweep_report.csv`` (one row per group, mean and std
columns) and, when ``loss.lambda_lm`` varies, ``sweep_report.png`` (AUC and alignment against λ, one
line per other setting). A job without ``metrics.json`` is listed as failed, never dropped.

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
    ("wall_time_s", "time/job (s)"),
)
SEED_KEYS = ("seed",)


@dataclass
class Job:
    path: Path
    overrides: list[str]
    metrics: dict[str, float] | None
    config_seed: str = "?"  # the seed in the job's config when it was not overridden

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
        """(mean, sample std (0 for one value), n) of ``key`` over the finished jobs."""
        vals = [j.metrics[key] for j in self.done if key in j.metrics and math.isfinite(j.metrics[key])]
        if not vals:
            return math.nan, math.nan, 0
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)


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
        metrics = None
        if mfile.exists():
            try:
                metrics = {k: float(v) for k, v in json.loads(mfile.read_text()).items()}
            except (ValueError, TypeError) as err:
                raise ValueError(f"{mfile} is not a metrics file: {err}") from None
        seed = "?"
        cfg_file = job_dir / ".hydra" / "config.yaml"
        if cfg_file.exists():
            seed = str((yaml.safe_load(cfg_file.read_text()) or {}).get("seed", "?"))
        jobs.append(Job(job_dir, overrides, metrics, seed))
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


def _fmt(mean: float, std: float, n: int, digits: int = 3) -> str:
    if n == 0:
        return "–"
    return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(groups: list[Group], jobs: list[Job]) -> str:
    cols = ["setting", "seeds"] + [name for _, name in METRICS]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for g in groups:
        seeds = ",".join(j.seed for j in g.done) or "–"
        cells = [_fmt(*g.stat(k), digits=0 if k == "wall_time_s" else 3) for k, _ in METRICS]
        lines.append("| " + " | ".join([_label(g.overrides), seeds, *cells]) + " |")
    failed = [j for j in jobs if j.metrics is None]
    n_done = len(jobs) - len(failed)
    common = common_overrides(jobs)
    lines.append("")
    if common:
        lines.append(f"Every job also ran with: `{' '.join(common)}`.")
    lines.append(f"{len(jobs)} jobs, {n_done} finished; mean ± sample std over seeds.")
    for j in failed:
        lines.append(f"- failed or unfinished (no metrics.json): `{j.path}` ({' '.join(j.overrides)})")
    return "\n".join(lines) + "\n"


def csv_text(groups: list[Group]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["setting", "n_finished", "n_jobs"]
    for k, _ in METRICS:
        header += [f"{k}_mean", f"{k}_std"]
    w.writerow(header)
    for g in groups:
        row: list = [_label(g.overrides), len(g.done), len(g.jobs)]
        for k, _ in METRICS:
            mean, std, n = g.stat(k)
            row += ["" if n == 0 else f"{mean:.6g}", "" if n == 0 else f"{std:.6g}"]
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


def report(sweep_dir: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write the markdown table, the CSV and the plot; returns their paths."""
    jobs = read_jobs(sweep_dir)
    groups = group_jobs(jobs)
    out_dir = Path(out) if out else Path(sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out_dir / "sweep_report.md", "csv": out_dir / "sweep_report.csv"}
    written["markdown"].write_text(markdown(groups, jobs))
    written["csv"].write_text(csv_text(groups))
    png = plot(groups, out_dir / "sweep_report.png")
    if png:
        written["plot"] = png
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
    args = p.parse_args(argv)
    try:
        paths = report(args.sweep_dir, args.out)
    except FileNotFoundError as err:  # a missing or empty sweep directory: one line, exit code 1
        from lmguide.cli import fail

        fail(str(err))
    print(paths["markdown"].read_text())
    for k, v in paths.items():
        print(f"{k}: {v}")
    return paths


if __name__ == "__main__":
    main()
