"""Power of a two-sided test of a difference: the smallest true difference it would detect, and how many
seeds a paired comparison needs to detect a given one (the sweep report prints both)."""

from __future__ import annotations

import math


def rejection_rate(delta: float, se: float, df: int | None = None, alpha: float = 0.05) -> float:
    """Power: the probability that a two-sided test at level ``alpha`` rejects "no difference" when the
    true difference is ``delta`` and its estimate has standard error ``se``. A z test without ``df`` (the
    DeLong test); with ``df`` a t test (the paired t-test over seeds: ``df = n - 1``), from the
    noncentral t distribution with noncentrality ``delta / se``. Both tails count."""
    from scipy import stats
    from scipy.special import ndtr, ndtri

    nc = abs(delta) / se
    z = float(ndtri(1 - alpha / 2))
    normal = float(ndtr(nc - z) + ndtr(-nc - z))
    if df is None:
        return normal
    t = float(stats.t.ppf(1 - alpha / 2, df))
    upper, lower = float(stats.nct.sf(t, df, nc)), float(stats.nct.cdf(-t, df, nc))
    if not math.isfinite(upper):  # scipy's noncentral t fails far out (large df and nc): the z figure
        return normal
    return upper + (lower if math.isfinite(lower) else 0.0)  # the far tail underflows there


def min_detectable_difference(
    se: float, df: int | None = None, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """The true difference that a two-sided test at ``alpha`` detects with probability ``power``, for an
    estimate with standard error ``se`` (a z test; with ``df`` a t test). For a z test at α = 0.05 and
    80 % power it is about (1.960 + 0.842) · se = 2.80 se; a t test over few seeds needs more
    (:func:`seed_mdd`). None for an se that is not a positive number."""
    from scipy.optimize import brentq

    if se is None or not math.isfinite(se) or se <= 0:
        return None
    hi = 4.0 * se
    while rejection_rate(hi, se, df, alpha) < power:  # t with 1 df: far beyond the z figure
        hi *= 2
    return float(brentq(lambda d: rejection_rate(d, se, df, alpha) - power, 0.0, hi, xtol=1e-12 * se))


def seed_mdd(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The minimum detectable difference of a paired t-test over ``n`` seeds whose per-seed differences
    have sample standard deviation ``sd``: se = sd / √n, n - 1 degrees of freedom (None for n < 2)."""
    if n < 2 or sd is None or not math.isfinite(sd) or sd <= 0:
        return None
    return min_detectable_difference(sd / math.sqrt(n), n - 1, alpha, power)


def seeds_needed(
    sd: float, delta: float = 0.02, alpha: float = 0.05, power: float = 0.8, max_n: int = 100_000
) -> int | None:
    """The fewest seeds (pairs, n >= 2) whose paired t-test detects a true difference ``delta`` with
    probability ``power``, when one seed's difference varies with standard deviation ``sd``. None when
    ``sd`` is not a positive number or more than ``max_n`` seeds would be needed."""
    if sd is None or not math.isfinite(sd) or sd <= 0 or delta == 0:
        return None

    def enough(n: int) -> bool:
        return rejection_rate(delta, sd / math.sqrt(n), n - 1, alpha) >= power

    if not enough(max_n):
        return None
    lo, hi = 1, max_n  # enough(hi); the power grows with n, so bisect for the first n that is enough
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return max(hi, 2)
