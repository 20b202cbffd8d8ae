"""The sweep report's per-source table: reals' median P(fake) against each run's own threshold."""

from __future__ import annotations

import json
import statistics

import numpy as np

from lmguide.sweep_report import report
from lmguide.sweeps.sources import source_rows, sources_markdown
from lmguide.viz.sources import summary

from .test_sweep_report import _job


def _sources_json(job_dir, reals: dict[str, list[float]], threshold: float, held_out=()) -> None:
    per = {
        src: {
            "held_out": src in held_out,
            "sets": ["test"],
            "real": np.asarray(v),
            "self-blend": np.asarray([0.9]),
        }
        | {"swap": np.asarray([])}
        for src, v in reals.items()
    }
    (job_dir / "curves").mkdir(parents=True)
    (job_dir / "curves" / "sources.json").write_text(json.dumps(summary(per, threshold)))


def _sweep(tmp_path):
    """Two settings, three seeds; source b's reals sit above the threshold in one seed of λ = 1."""
    runs = {
        "0": [
            ({"a": [0.2, 0.3, 0.4], "b": [0.5, 0.6, 0.7]}, 0.55),
            ({"a": [0.1, 0.2], "b": [0.7, 0.8]}, 0.6),
        ],
        "1": [
            ({"a": [0.1, 0.2, 0.3], "b": [0.3, 0.4]}, 0.5),
            ({"a": [0.2], "b": [0.45, 0.5, 0.55]}, 0.6),
            ({"a": [0.3, 0.5], "b": [0.7, 0.9]}, 0.65),
        ],
    }
    num = 0
    for lam, seeds in runs.items():
        for seed, (reals, thr) in enumerate(seeds):
            _job(tmp_path, num, [f"loss.lambda_lm={lam}", f"seed={seed}"], {"val/auc": 0.8})
            _sources_json(tmp_path / str(num), reals, thr, held_out={"b"})
            num += 1
    # a finished job of an older run, without curves/sources.json: left out of the table, not fatal
    _job(tmp_path, num, ["loss.lambda_lm=1", "seed=3"], {"val/auc": 0.8})
    return runs


def test_rows_are_the_medians_over_seeds_of_each_runs_margin(tmp_path):
    from lmguide.sweeps.jobs import group_jobs, read_jobs

    runs = _sweep(tmp_path)
    rows = {(r.setting, r.source): r for r in source_rows(group_jobs(read_jobs(tmp_path)))}
    assert set(rows) == {(f"loss.lambda_lm={lam}", s) for lam in runs for s in "ab"}
    for lam, seeds in runs.items():
        for src in "ab":
            row = rows[(f"loss.lambda_lm={lam}", src)]
            medians = [statistics.median(reals[src]) for reals, _ in seeds]
            margins = [m - thr for m, (_, thr) in zip(medians, seeds, strict=True)]
            assert row.medians == medians and np.allclose(row.margins, margins)
            assert row.below == sum(m < 0 for m in margins)
            assert row.held_out == (src == "b")
            assert row.reals == max(len(reals[src]) for reals, _ in seeds)
    # λ = 1, source b: medians 0.35, 0.5, 0.8 against 0.5, 0.6, 0.65: below in 2 of 3
    assert rows[("loss.lambda_lm=1", "b")].below == 2


def test_the_table_is_on_the_report_and_absent_without_sources(tmp_path):
    _sweep(tmp_path / "with")
    text = report(tmp_path / "with")["markdown"].read_text()
    assert "| loss.lambda_lm=1 | b (held out) | 3 | 3 | 0.500 | -0.100 | 2 of 3 |" in text
    assert "| loss.lambda_lm=0 | a | 3 | 2 | 0.225 | -0.350 | 2 of 2 |" in text
    _job(tmp_path / "without", 0, ["loss.lambda_lm=0", "seed=0"], {"val/auc": 0.8})
    from lmguide.sweeps.jobs import group_jobs, read_jobs

    assert sources_markdown(group_jobs(read_jobs(tmp_path / "without"))) == ""
    assert "Reals per source" not in report(tmp_path / "without")["markdown"].read_text()
