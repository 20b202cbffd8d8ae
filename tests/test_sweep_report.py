"""The sweep report: groups by overrides without the seed, mean ± sample std, failed jobs listed."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from lmguide.sweep_report import main, read_jobs, report


def _job(root, num: int, overrides: list[str], metrics: dict | None) -> None:
    d = root / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path):
    vals = {0.0: [0.60, 0.64, 0.62], 1.0: [0.70, 0.74, 0.75]}
    num = 0
    for lam, aucs in vals.items():
        for seed, auc in enumerate(aucs):
            metrics = {
                "val/auc": auc,
                "test/auc": auc - 0.1,
                "val/attn_in_lm": 0.1 + lam * 0.2,
                "wall_time_s": 60,
            }
            _job(tmp_path, num, [f"loss.lambda_lm={lam:g}", f"seed={seed}"], metrics)
            num += 1
    _job(tmp_path, num, ["loss.lambda_lm=0.3", "seed=0"], None)  # a job that died
    return tmp_path, vals


def test_report_groups_seeds_and_lists_failures(sweep):
    root, vals = sweep
    paths = report(root)
    table = paths["markdown"].read_text()
    for lam, aucs in vals.items():
        mean, std = statistics.fmean(aucs), statistics.stdev(aucs)
        assert f"| loss.lambda_lm={lam:g} | 0,1,2 | {mean:.3f} ± {std:.3f} |" in table
    assert "7 jobs, 6 finished" in table and "loss.lambda_lm=0.3 seed=0" in table
    rows = {r["setting"]: r for r in csv.DictReader(paths["csv"].open())}
    assert float(rows["loss.lambda_lm=1"]["val/auc_mean"]) == pytest.approx(statistics.fmean(vals[1.0]))
    assert float(rows["loss.lambda_lm=1"]["val/auc_std"]) == pytest.approx(
        statistics.stdev(vals[1.0]), rel=1e-5
    )
    assert (
        rows["loss.lambda_lm=0.3"]["n_finished"] == "0" and rows["loss.lambda_lm=0.3"]["val/auc_mean"] == ""
    )
    assert paths["plot"].stat().st_size > 10_000  # AUC and alignment against λ


def test_jobs_are_read_in_numeric_order(sweep):
    root, _ = sweep
    assert [j.path.name for j in read_jobs(root)] == [str(i) for i in range(7)]


def test_cli_and_missing_dir(sweep, tmp_path, capsys):
    root, _ = sweep
    main([str(root), "--out", str(tmp_path / "out")])
    assert "7 jobs, 6 finished" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report(tmp_path / "nope")
