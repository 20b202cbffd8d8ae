"""The jobs of a Hydra multirun as the sweep report reads them: each job's overrides and metrics, and
the groups of jobs that differ only in their seed; the jobs the sweep planned (its ``multirun.yaml``)
that never started, and the line a sweep stopped by a signal ends with.

A job that ``python -m lmguide.crosseval runs=<sweep dir>`` scored on other data sets also holds
``crosseval/crosseval.json``: its per-set metrics (``<set>/auc``, ``<set>/video_auc``, ``<set>/eer``,
``<set>/ap``) join the job's, and the report's columns and pairs gain one per set
(:func:`metric_columns`, :func:`paired_metrics`)."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmguide.evaluation.crosseval_table import read_sweep_metrics
from lmguide.runs.resume import INTERRUPTED, SIGNAL_EXIT

METRICS = (
    ("val/auc", "val AUC"),
    ("test/auc", "test AUC"),
    ("val/eer", "val EER"),
    ("test/eer", "test EER"),
    ("val/attn_in_lm", "val attn_in_lm"),
    ("test/attn_in_lm", "test attn_in_lm"),
    # the test faces' attention on each region of the default mask, and how alike the maps are
    ("test/attn_eyes", "test eyes"),
    ("test/attn_nose", "test nose"),
    ("test/attn_mouth", "test mouth"),
    ("test/map_corr", "test map_corr"),
    ("swaps/auc", "swaps AUC"),
    ("xsource/auc", "xsource AUC"),
    ("xsource_swaps/auc", "xsource swaps AUC"),
    ("wall_time_s", "time/job (s)"),
)
#: per crosseval set (``<set>/<key>``): its columns in the table and its seed-paired comparisons
CROSS_COLUMNS = (("auc", "AUC"), ("video_auc", "video AUC"))
SEED_KEYS = ("seed",)
#: what Hydra saves in a sweep dir: the sweep's config, its planned jobs' overrides among it
MULTIRUN = "multirun.yaml"
LAMBDA_KEY = "loss.lambda_lm"
#: the AUCs compared against λ = 0, paired by seed (val, and the held-out sources, choose settings;
#: test only reports)
PAIRED = (
    ("val/auc", "val AUC"),
    ("test/auc", "test AUC"),
    ("swaps/auc", "swaps AUC (cross-method)"),
    ("xsource/auc", "xsource AUC (unseen source)"),
    ("xsource_swaps/auc", "xsource swaps AUC"),
)


@dataclass
class Job:
    path: Path
    overrides: list[str]
    metrics: dict[str, float | None] | None  # None: no usable metrics.json; a value None: undefined
    config_seed: str = "?"  # the seed in the job's config when it was not overridden
    broken: str = ""  # why its metrics.json could not be read
    stopped: str = ""  # its INTERRUPTED marker: stopped by a signal, and how to go on
    num: int | None = None  # its job number, for a job that never started (no directory)
    sets: list[str] = field(default_factory=list)  # the data sets crosseval scored its checkpoint on

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
    is_baseline: bool = False  # sweep_report --baseline: every other setting is compared with it

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
    """A metrics.json value: a number, None (undefined), or text: an ``.../undefined`` reason or the
    held-out sources of ``xsource/sources``."""
    if v is None or (isinstance(v, str) and key.endswith(("undefined", "/sources"))):
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
        metrics, broken, sets = None, "", []
        try:
            if mfile.exists():
                metrics = read_metrics(mfile)
            extra, sets = read_sweep_metrics(job_dir)  # crosseval's per-set metrics, if scored
            if sets:  # a crosseval job of its own multirun has no metrics.json
                metrics = {**(metrics or {}), **extra}
        except ValueError as err:  # one broken job is reported, the others still are
            metrics, broken = None, str(err)
        seed = "?"
        cfg_file = job_dir / ".hydra" / "config.yaml"
        if cfg_file.exists():
            try:
                seed = str((yaml.safe_load(cfg_file.read_text()) or {}).get("seed", "?"))
            except (yaml.YAMLError, AttributeError):
                pass
        marker = job_dir / INTERRUPTED
        stopped = marker.read_text(errors="replace").strip() if marker.is_file() else ""
        jobs.append(Job(job_dir, overrides, metrics, seed, broken, stopped, sets=sets))
    jobs += not_started(root, jobs)
    if not jobs:
        raise FileNotFoundError(f"no Hydra job directories (.hydra/overrides.yaml) under {root}")
    return jobs


def crosseval_sets(jobs: list[Job]) -> list[str]:
    """The data sets crosseval scored any of ``jobs`` on, in the order first met."""
    return list(dict.fromkeys(s for j in jobs for s in j.sets))


def metric_columns(jobs: list[Job]) -> tuple[tuple[str, str], ...]:
    """:data:`METRICS`, with each crosseval set's frame and video AUC before the wall time."""
    extra = [(f"{s}/{k}", f"{s} {name}") for s in crosseval_sets(jobs) for k, name in CROSS_COLUMNS]
    return (*METRICS[:-1], *extra, METRICS[-1])


def paired_metrics(jobs: list[Job]) -> tuple[tuple[str, str], ...]:
    """:data:`PAIRED`, with each crosseval set's frame and video AUC."""
    sets = crosseval_sets(jobs)
    return (*PAIRED, *[(f"{s}/{k}", f"{s} {name} (crosseval)") for s in sets for k, name in CROSS_COLUMNS])


def planned_jobs(sweep_dir: str | Path) -> list[list[str]] | None:
    """Every job's overrides, numbered as Hydra's basic sweeper numbers them, from the sweep's
    ``multirun.yaml`` (its ``hydra.sweeper.params`` and command-line overrides); None when the sweep
    dir has none, or its sweeper chooses jobs as it goes (Optuna)."""
    from hydra.errors import HydraException

    path = Path(sweep_dir).expanduser() / MULTIRUN
    try:
        hydra_cfg = (yaml.safe_load(path.read_text()) or {}).get("hydra") or {}
        sweeper = hydra_cfg.get("sweeper") or {}
        if not str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
            return None
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        args = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        args += [str(o) for o in (hydra_cfg.get("overrides") or {}).get("task") or []]
        parsed = OverridesParser.create().parse_overrides(args)
        batches = BasicSweeper.split_arguments(parsed, sweeper.get("max_batch_size"))  # as Hydra splits
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError, HydraException):
        return None
    return [list(job) for batch in batches for job in batch]


def not_started(sweep_dir: str | Path, jobs: list[Job]) -> list[Job]:
    """The planned jobs (:func:`planned_jobs`) that no job directory holds (matched by overrides)."""
    left = Counter(tuple(j.overrides) for j in jobs)
    out = []
    for num, overrides in enumerate(planned_jobs(sweep_dir) or []):
        if left[tuple(overrides)] > 0:
            left[tuple(overrides)] -= 1
        else:
            out.append(Job(Path(sweep_dir) / str(num), overrides, None, num=num))
    return out


def stopped_sweep_line(sweep_dir: str | Path, num: int, why: str) -> str:
    """What a sweep stopped by ``why`` (SIGTERM, SIGINT) in job ``num`` says: the jobs that did not run,
    by number and overrides, and how to run them into the directories the sweep would have used."""
    root = Path(sweep_dir)
    planned = planned_jobs(root)
    report = f"`python -m lmguide.sweep_report {root}`"
    if planned is None:
        return (
            f"sweep stopped by {why} at job {num}: its sweeper chooses jobs as it goes, so the ones after it "
            f"were not run; {report} lists those that did"
        )
    jobs = read_jobs(root)
    left = [j for j in jobs if j.num is not None]
    head = f"sweep stopped by {why} at job {num} of {len(planned)}"
    if not left:
        return f"{head}: every other job had started; {report} summarises them"
    import shlex

    common = [o for o in planned[0] if all(o in job for job in planned[1:])]
    own = [" ".join(shlex.quote(o) for o in j.overrides if o not in common) for j in left]
    named = ", ".join(f"#{j.num} {text}".strip() for j, text in zip(left, own, strict=True))
    run = " ".join(
        ["python -m lmguide.train", *map(shlex.quote, common), "<its overrides>", "hydra.mode=RUN"]
    )
    return f"{head}; not run: {named} (run each with `{run} hydra.run.dir={root}/<#>`, then {report})"


def print_stopped_sweep(code: int | str | None) -> None:
    """In a job of a multirun that a signal stopped (exit ``code`` 143 or 130: the sweep stops with it),
    print the :func:`stopped_sweep_line` after the job's own line."""
    import sys

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    why = next((name for name, c in SIGNAL_EXIT.items() if c == code), None)
    if why is None or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hc = HydraConfig.get()
    try:
        line = stopped_sweep_line(hc.sweep.dir, int(hc.job.num), why)
    except (OSError, ValueError) as err:  # the stop itself is reported either way
        line = f"sweep stopped by {why} at job {hc.job.num}; its jobs could not be listed ({err})"
    print(f"error: {line}", file=sys.stderr, flush=True)


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


def group_label(overrides: tuple[str, ...]) -> str:
    return " ".join(overrides) if overrides else "(no overrides)"


def override_value(overrides: tuple[str, ...], key: str) -> str | None:
    for o in overrides:
        k, _, v = o.partition("=")
        if k.lstrip("+~") == key:
            return v
    return None
