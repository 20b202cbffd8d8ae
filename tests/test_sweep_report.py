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


# -- paired comparisons against λ = 0, undefined metrics, broken jobs (issue 15, issue 13 item 4) --------


def test_paired_t_test_equals_a_hand_computed_case():
    from lmguide.sweep_paired import paired_t_test

    # differences 1, 2, 3: mean 2, sample sd 1, t = 2 / (1 / sqrt 3) = 3.4641, df 2;
    # two-sided p = 2 * P(T_2 > t) with P(T_2 > t) = (1 - t / sqrt(t^2 + 2)) / 2 (closed form for df 2)
    t = 2 * 3**0.5
    p = 1 - t / (t * t + 2) ** 0.5
    res = paired_t_test([1.0, 2.0, 3.0])
    assert res["t"] == pytest.approx(t) and res["df"] == 2 and res["p"] == pytest.approx(p, rel=1e-9)
    assert res["p"] == pytest.approx(0.0741799, rel=1e-5)
    scipy_stats = pytest.importorskip("scipy.stats")
    a, b = [0.71, 0.64, 0.80, 0.77, 0.69], [0.70, 0.60, 0.72, 0.75, 0.70]
    ref = scipy_stats.ttest_rel(a, b)
    mine = paired_t_test([x - y for x, y in zip(a, b, strict=True)])
    assert mine["t"] == pytest.approx(ref.statistic) and mine["p"] == pytest.approx(ref.pvalue)


def test_the_t_interval_is_hand_computed_and_agrees_with_the_p_value():
    from lmguide.sweep_paired import paired_t_test

    # differences 1, 2, 3: mean 2 ± t_0.975(2) · 1 / sqrt 3, t_0.975(2) = 4.302653
    lo, hi = paired_t_test([1.0, 2.0, 3.0])["ci"]
    assert lo == pytest.approx(2 - 4.302653 / 3**0.5, rel=1e-6) and hi == pytest.approx(2 + 4.302653 / 3**0.5)
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = __import__("random").Random(0)
    for _ in range(50):
        d = [rng.gauss(0.02, 0.03) for _ in range(rng.choice((3, 5, 10)))]
        res = paired_t_test(d)
        ref = scipy_stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
        assert res["ci"] == pytest.approx((ref.low, ref.high))
        assert (res["ci"][0] > 0 or res["ci"][1] < 0) == (res["p"] < 0.05)  # the same verdict


def test_paired_t_test_is_undefined_without_spread_or_pairs():
    from lmguide.sweep_paired import paired_t_test

    assert paired_t_test([0.1])["p"] is None and "2" in paired_t_test([0.1])["reason"]
    assert paired_t_test([0.1, 0.1, 0.1])["p"] is None


def test_guided_settings_are_compared_with_lambda_0_by_seed(tmp_path):
    base = {0: 0.60, 1: 0.65, 2: 0.62, 3: 0.70}
    guided = {0: 0.66, 1: 0.66, 2: 0.70}  # seed 3 of the guided setting died
    num = 0
    for lam, aucs in ((0.0, base), (0.3, guided)):
        for seed, auc in aucs.items():
            _job(
                tmp_path,
                num,
                [f"loss.lambda_lm={lam:g}", f"seed={seed}"],
                {"test/auc": auc, "swaps/auc": 0.5},
            )
            num += 1
    paths = report(tmp_path)
    rows = list(csv.DictReader(paths["paired"].open()))
    test_row = next(r for r in rows if r["metric"] == "test AUC")
    assert test_row["setting"] == "loss.lambda_lm=0.3" and test_row["baseline"] == "loss.lambda_lm=0"
    assert test_row["pairs"] == "3" and test_row["seeds"] == "0 1 2"  # paired by seed, 3 unpaired
    assert float(test_row["mean_diff"]) == pytest.approx((0.06 + 0.01 + 0.08) / 3)
    lo, hi = float(test_row["ci95_lo"]), float(test_row["ci95_hi"])
    assert 0.01 - 1e-9 <= lo <= float(test_row["mean_diff"]) <= hi <= 0.08 + 1e-9
    swaps = next(r for r in rows if r["metric"].startswith("swaps"))
    assert swaps["p"] == "" and "same amount" in swaps["note"]  # all differences 0: no test
    assert "Against λ = 0, paired by seed" in paths["markdown"].read_text()


def test_a_variant_is_also_compared_with_the_setting_it_varies(tmp_path):
    # the layout of make results: baseline and guided grids, then a variant of the guided ratio run, each a
    # sweep of its own under one root
    runs = {
        ("1_unguided", ("loss=ratio", "loss.lambda_lm=0")): [0.60, 0.62, 0.64],
        ("2_guided", ("loss=ratio", "loss.lambda_lm=1")): [0.66, 0.61, 0.70],
        ("2_guided", ("loss=kl", "loss.lambda_lm=1")): [0.50, 0.52, 0.54],
        ("3_size160", ("loss=ratio", "loss.lambda_lm=1", "data.image_size=160")): [0.70, 0.70, 0.69],
    }
    num: dict[str, int] = {}
    for (sub, overrides), aucs in runs.items():
        for seed, auc in enumerate(aucs):
            n = num.setdefault(sub, 0)
            _job(tmp_path / sub, n, [*overrides, f"seed={seed}"], {"test/auc": auc})
            num[sub] = n + 1
    rows = [r for r in csv.DictReader(report(tmp_path)["paired"].open()) if r["metric"] == "test AUC"]
    pairs = {(r["setting"], r["baseline"]): float(r["mean_diff"]) for r in rows}
    base, ratio = "loss=ratio loss.lambda_lm=0", "loss=ratio loss.lambda_lm=1"
    big = "loss=ratio loss.lambda_lm=1 data.image_size=160"
    assert set(pairs) == {(ratio, base), ("loss=kl loss.lambda_lm=1", base), (big, base), (big, ratio)}
    assert pairs[(big, ratio)] == pytest.approx((0.04 + 0.09 - 0.01) / 3)  # 160 px against 128 px, λ = 1
    assert pairs[("loss=kl loss.lambda_lm=1", base)] == pytest.approx(-0.10)  # the only λ = 0 baseline
    assert [r["setting"] for r in rows][-1] == big  # variants after the λ = 0 comparisons


def test_undefined_metrics_are_reported_as_undefined(tmp_path):
    for seed in range(2):
        metrics = {
            "val/auc": 0.7,
            "test/auc": None,
            "test/undefined": "undefined: one class only (5 real, 0 fake)",
        }
        _job(tmp_path, seed, ["loss.lambda_lm=1", f"seed={seed}"], metrics)
    paths = report(tmp_path)
    table = paths["markdown"].read_text()
    assert "| 0.700 ± 0.000 | undefined |" in table  # test AUC: never a number
    row = next(csv.DictReader(paths["csv"].open()))
    assert row["test/auc_mean"] == "" and row["test/auc_undefined"] == "2"


def test_a_corrupt_metrics_json_is_reported_and_the_rest_goes_on(sweep):
    root, vals = sweep
    (root / "0" / "metrics.json").write_text('{"val/auc": 0.6, "test/auc": ')  # truncated write
    (root / "1" / "metrics.json").write_text('{"val/auc": "abc"}')  # not a number
    paths = report(root)
    table = paths["markdown"].read_text()
    assert "7 jobs, 4 finished" in table
    assert f"broken (unreadable metrics.json): `{root / '0'}`" in table and "cannot be read as JSON" in table
    assert f"`{root / '1'}`" in table and "val/auc is str" in table
    assert f"| loss.lambda_lm=0 | 2 | {vals[0.0][2]:.3f} |" in table  # the remaining seed is reported


def test_results_page_is_generated_with_its_command(sweep, tmp_path):
    root, vals = sweep
    page = tmp_path / "docs" / "results.md"
    paths = main([str(root), "--results", str(page), "--command", "make results"])
    text = page.read_text()
    assert paths["results"] == page and text.startswith("# Results")
    assert "do not edit by hand" in text and "make results" in text and str(root) in text
    mean, std = statistics.fmean(vals[1.0]), statistics.stdev(vals[1.0])
    assert f"| loss.lambda_lm=1 | 0,1,2 | {mean:.3f} ± {std:.3f} |" in text
    assert "Against λ = 0, paired by seed" in text  # the sweep has λ = 0 and λ = 1 with seeds 0-2
