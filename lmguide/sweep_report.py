"""Summarise a Hydra multirun: ``python -m lmguide.sweep_report <multirun dir> [--out DIR]``.

Every job directory of the sweep holds ``.hydra/overrides.yaml`` (its command-line overrides) and, if
it finished, ``metrics.json``. Jobs are grouped by their overrides without ``seed``; each group gets
the mean ± sample std over its seeds of val/test AUC, EER, the attention-in-landmark share and the
wall time. Writes ``sweep_report.md`` (a table), ``sweep_report.csv`` (one row per group, mean and std
columns) and, when ``loss.lambda_lm`` varies, ``sweep_report.png`` (AUC and alignment against λ, one
line per other setting, each point's seed count beside it, hollow where one seed makes it, and the
alignment's chance level, ``mask_area``, as a dashed line). A job without ``metrics.json`` is listed as
failed (as stopped, with its ``INTERRUPTED`` line, when a signal stopped it), one whose ``metrics.json``
cannot be read as broken (with the reason), and a job the sweep planned (its ``multirun.yaml``) that has
no directory as never started; none is ever dropped. A metric a job reports as undefined (null: e.g.
AUC on a split of one class) is counted as such, never averaged as a number.

When ``loss.lambda_lm`` varies, every setting with λ > 0 is also compared with its λ = 0 baseline (the
λ = 0 setting with the same other overrides, or the only one), paired by seed, on the test and the
cross-method (face swap) AUC: the mean difference, its 95 % t interval and a 95 % bootstrap interval
(resampling the seed pairs), and the two-sided p-value of a paired t-test (``sweep_report_paired.csv``,
and a second table in the markdown). A variant, a guided setting that adds overrides to another at the same λ
(``loss.landmark.apply_to=fake_blend``, ``data.image_size=160``), is also compared with that setting.

The same pairs are also compared on the same faces, from each job's ``predictions.csv``
(:mod:`lmguide.sweeps.faces`): per seed a clustered DeLong test, across seeds a hierarchical bootstrap
(seeds, then people), on the test and the swaps split, with the minimum detectable difference and the
seeds a difference of 0.02 would need (``sweep_report_faces.csv``, a third table). Jobs without
``predictions.csv`` (older runs) are named in that table.

Also runs at the end of every ``-m`` sweep of ``lmguide.train`` (a Hydra callback, see
:class:`SweepReportCallback`).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from hydra.experimental.callback import Callback

from lmguide.sweeps.faces import FaceComparison, face_comparisons, faces_csv, faces_markdown
from lmguide.sweeps.jobs import (
    Group,
    Job,
    common_overrides,
    group_jobs,
    group_label,
    metric_columns,
    override_value,
    read_jobs,
)
from lmguide.sweeps.paired import paired_comparisons, paired_csv, paired_markdown
from lmguide.sweeps.sources import sources_markdown


def _fmt(mean: float, std: float, n: int, digits: int = 3, undefined: int = 0) -> str:
    note = f" ({undefined} undefined)" if undefined else ""
    if n == 0:
        return "undefined" if undefined else "–"
    return (f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}") + note


def markdown(groups: list[Group], jobs: list[Job], faces: list[FaceComparison] | None = None) -> str:
    """The tables: per setting, paired by seed, and (``faces``: default computed here) on the same faces."""
    columns = metric_columns(jobs)
    cols = ["setting", "seeds"] + [name for _, name in columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for g in groups:
        seeds = ",".join(j.seed for j in g.done) or "–"
        cells = [
            _fmt(*g.stat(k), digits=0 if k == "wall_time_s" else 3, undefined=g.undefined(k))
            for k, _ in columns
        ]
        lines.append("| " + " | ".join([group_label(g.overrides), seeds, *cells]) + " |")
    failed = [j for j in jobs if j.metrics is None]
    n_done = len(jobs) - len(failed)
    n_new = sum(1 for j in failed if j.num is not None)
    common = common_overrides(jobs)
    lines.append("")
    if common:
        lines.append(f"Every job also ran with: `{' '.join(common)}`.")
    lines.append(
        f"{len(jobs)} jobs, {n_done} finished"
        + (f", {n_new} never started" if n_new else "")
        + "; mean ± sample std over seeds (undefined values, e.g. an AUC on a split of one class, are "
        "counted, not averaged)."
    )
    for j in failed:
        if j.num is not None:
            lines.append(
                f"- never started (planned in multirun.yaml, no job dir): job #{j.num} "
                f"({' '.join(j.overrides)})"
            )
        elif j.stopped:
            lines.append(f"- stopped: `{j.path}` ({' '.join(j.overrides)}): {j.stopped}")
        elif j.broken:
            lines.append(
                f"- broken (unreadable metrics.json): `{j.path}` ({' '.join(j.overrides)}): {j.broken}"
            )
        else:
            lines.append(f"- failed or unfinished (no metrics.json): `{j.path}` ({' '.join(j.overrides)})")
    comparisons = paired_comparisons(groups)
    if comparisons:
        lines += ["", paired_markdown(comparisons)]
    faces = face_comparisons(groups) if faces is None else faces
    if faces:
        lines += ["", faces_markdown(faces)]
    by_source = sources_markdown(groups)
    if by_source:
        lines += ["", by_source]
    return "\n".join(lines) + "\n"


def csv_text(groups: list[Group]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["setting", "n_finished", "n_jobs"]
    columns = metric_columns([j for g in groups for j in g.jobs])
    for k, _ in columns:
        header += [f"{k}_mean", f"{k}_std", f"{k}_undefined"]
    w.writerow(header)
    for g in groups:
        row: list = [group_label(g.overrides), len(g.done), len(g.jobs)]
        for k, _ in columns:
            mean, std, n = g.stat(k)
            row += ["" if n == 0 else f"{mean:.6g}", "" if n == 0 else f"{std:.6g}", g.undefined(k)]
        w.writerow(row)
    return buf.getvalue()


#: the panels of the plot against λ: (metric, axis label); an attn_in_lm panel gets its chance line
PLOT_PANELS = (("val/auc", "val AUC"), ("val/attn_in_lm", "val attn_in_lm"))


def _chance(pts: list[tuple[float, Group]], metric: str) -> float | None:
    """The chance level of an ``<split>/attn_in_lm`` panel: the mean ``<split>/mask_area`` of the line's
    jobs (attention spread evenly puts that share inside the mask); None for other panels or runs that
    did not log it."""
    if not metric.endswith("/attn_in_lm"):
        return None
    area = metric.replace("/attn_in_lm", "/mask_area")
    values = [v for _, g in pts for j in g.done if (v := j.metrics.get(area)) is not None]
    return sum(values) / len(values) if values else None


def _draw_line(ax, label: str | None, pts: list[tuple[float, Group]], metric: str) -> None:
    """One setting's means ± std against λ; hollow markers where one seed defines the point (no spread
    to show), the seed count beside every point."""
    stats = [(x, *g.stat(metric)) for x, g in pts]
    stats = [(x, m, sd, n) for x, m, sd, n in stats if n]
    if not stats:
        return
    xs, means, sds, ns = (list(c) for c in zip(*stats, strict=True))
    line = ax.errorbar(xs, means, yerr=sds, capsize=3, label=label)[0]
    color = line.get_color()
    for several in (True, False):
        sel = [i for i, n in enumerate(ns) if (n > 1) == several]
        if sel:
            ax.plot([xs[i] for i in sel], [means[i] for i in sel], "o", ls="none", color=color,
                    mfc=color if several else "none", mec=color)  # fmt: skip
    for x, m, n in zip(xs, means, ns, strict=True):
        ax.annotate(f"n={n}", (x, m), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)


def plot_figure(groups: list[Group], key: str = "loss.lambda_lm"):
    """The Figure of AUC and attention-in-landmark share against λ, one line per setting of the other
    overrides (None when λ takes fewer than two values): means ± std over seeds, each point's seed count
    beside it, hollow markers for single-seed points, and the chance level (``mask_area``) as a dashed
    line on the attn_in_lm panel."""
    points = [(g, override_value(g.overrides, key)) for g in groups]
    points = [(g, float(v)) for g, v in points if v is not None and g.done]
    if len({v for _, v in points}) < 2:
        return None
    from lmguide.viz.figures import pyplot

    lines: dict[str, list[tuple[float, Group]]] = {}
    for g, v in points:
        rest = tuple(o for o in g.overrides if o.partition("=")[0].lstrip("+~") != key)
        lines.setdefault(group_label(rest), []).append((v, g))
    fig, axes = pyplot().subplots(1, len(PLOT_PANELS), figsize=(11, 4))
    one_seed = any(g.stat(m)[2] == 1 for g, _ in points for m, _ in PLOT_PANELS)
    for (metric, name), ax in zip(PLOT_PANELS, axes, strict=True):
        ax.set_xscale("symlog", linthresh=0.1)  # before axhline, which fixes the limits it sees
        chances = set()
        for label, pts in lines.items():
            pts.sort(key=lambda p: p[0])
            _draw_line(ax, label if len(lines) > 1 else None, pts, metric)
            if (c := _chance(pts, metric)) is not None:
                chances.add(round(c, 6))
        for value in sorted(chances):
            ax.axhline(value, ls="--", color="grey", lw=1,
                       label=f"chance: mask_area {value:.3f} (attention spread evenly)")  # fmt: skip
        ax.set_xlabel("λ (loss.lambda_lm)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    note = "; hollow: one seed (no spread)" if one_seed else ""
    fig.suptitle(f"mean ± std over seeds (n = seeds per point{note})")
    fig.tight_layout()
    return fig


def plot(groups: list[Group], path: Path, key: str = "loss.lambda_lm") -> Path | None:
    """:func:`plot_figure` saved to ``path`` (None, nothing written, when λ does not vary)."""
    fig = plot_figure(groups, key)
    if fig is None:
        return None
    from lmguide.viz.figures import pyplot

    try:
        fig.savefig(path, dpi=120)
    finally:
        pyplot().close(fig)
    return path


def results_page(
    sweep_dir: str | Path, groups: list[Group], jobs: list[Job], command: str, faces: list | None = None
) -> str:
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
    return "\n".join(head) + "\n" + markdown(groups, jobs, faces)


def report(
    sweep_dir: str | Path,
    out: str | Path | None = None,
    results: str | Path | None = None,
    command: str = "",
    baseline: str | None = None,
) -> dict[str, Path]:
    """Write the markdown table, the CSV and the plot (and, with ``results``, the results page); returns
    their paths."""
    jobs = read_jobs(sweep_dir)
    groups = group_jobs(jobs)
    if baseline is not None:
        labels = [group_label(g.overrides) for g in groups]
        if baseline not in labels:
            raise ValueError(f"--baseline {baseline!r} is no setting of this sweep; its settings: {labels}")
        groups[labels.index(baseline)].is_baseline = True
    out_dir = Path(out) if out else Path(sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out_dir / "sweep_report.md", "csv": out_dir / "sweep_report.csv"}
    faces = face_comparisons(groups)  # the bootstrap runs once, for the markdown and the results page
    written["markdown"].write_text(markdown(groups, jobs, faces))
    written["csv"].write_text(csv_text(groups))
    comparisons = paired_comparisons(groups)
    if comparisons:
        written["paired"] = out_dir / "sweep_report_paired.csv"
        written["paired"].write_text(paired_csv(comparisons))
    if faces:
        written["faces"] = out_dir / "sweep_report_faces.csv"
        written["faces"].write_text(faces_csv(faces))
    png = plot(groups, out_dir / "sweep_report.png")
    if png:
        written["plot"] = png
    if results:
        written["results"] = Path(results)
        written["results"].parent.mkdir(parents=True, exist_ok=True)
        cmd = command or f"python -m lmguide.sweep_report {sweep_dir} --results {results}"
        written["results"].write_text(results_page(sweep_dir, groups, jobs, cmd, faces))
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
    p.add_argument(
        "--baseline",
        default=None,
        help="the setting (as the table labels it) every other is compared with; default: λ = 0",
    )
    args = p.parse_args(argv)
    try:
        paths = report(args.sweep_dir, args.out, args.results, args.command, args.baseline)
    except (FileNotFoundError, ValueError) as err:  # a missing sweep, an unknown baseline: one line, exit 1
        from lmguide.runs.cli import fail

        fail(str(err))
    print(paths["markdown"].read_text())
    for k, v in paths.items():
        print(f"{k}: {v}")
    return paths


if __name__ == "__main__":
    main()
