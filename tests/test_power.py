"""lmguide.evaluation.power: the minimum detectable difference and the seeds needed, against simulated
tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lmguide.evaluation.power import min_detectable_difference, rejection_rate, seed_mdd, seeds_needed

SIMS = 20_000  # the rejection rate's standard error at 0.8: sqrt(0.16 / 20000) = 0.0028
TOL = 0.012  # over 4 standard errors


def test_the_z_test_mdd_is_the_textbook_figure_and_simulates_to_80_percent():
    se = 0.013
    mdd = min_detectable_difference(se)
    # (z_0.975 + z_0.8) se, less a hair: the far tail adds to the power
    assert mdd == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * se, rel=1e-4)
    est = np.random.default_rng(0).normal(mdd, se, SIMS)  # the estimates a true difference of mdd gives
    rejected = np.mean(np.abs(est / se) > stats.norm.ppf(0.975))
    assert rejected == pytest.approx(0.80, abs=TOL)


@pytest.mark.parametrize("n, sd", [(3, 0.05), (5, 0.03), (10, 0.1)])
def test_the_seed_mdd_simulates_to_80_percent_power_of_the_paired_t_test(n, sd):
    mdd = seed_mdd(sd, n)
    assert mdd > min_detectable_difference(sd / math.sqrt(n))  # few seeds: the t test needs more
    diffs = np.random.default_rng(n).normal(mdd, sd, (SIMS, n))  # per seed: setting - baseline
    p = stats.ttest_1samp(diffs, 0.0, axis=1).pvalue
    assert np.mean(p < 0.05) == pytest.approx(0.80, abs=TOL)


def test_seeds_needed_is_the_first_n_with_80_percent_power():
    sd = 0.05
    n = seeds_needed(sd, 0.02)
    assert (
        rejection_rate(0.02, sd / math.sqrt(n), n - 1)
        >= 0.8
        > rejection_rate(0.02, sd / math.sqrt(n - 1), n - 2)
    )
    assert seed_mdd(sd, n) <= 0.02 < seed_mdd(sd, n - 1)
    diffs = np.random.default_rng(1).normal(0.02, sd, (SIMS, n))
    power = np.mean(stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05)
    assert 0.80 - TOL <= power <= 0.80 + 0.05  # the first n that reaches 80 %: at most a little above


def test_no_spread_or_too_few_seeds_give_none():
    assert seed_mdd(0.05, 1) is None and seed_mdd(0.0, 5) is None and min_detectable_difference(0) is None
    assert seeds_needed(float("nan")) is None and seeds_needed(1.0, 0.02, max_n=10) is None
    assert seeds_needed(1e-6, 0.02) == 2  # the fewest a paired t-test can use
