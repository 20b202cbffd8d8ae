"""lmguide.evaluation.auc.delong_test: DeLong's test of two correlated AUCs and Obuchowski's clustered
form, against an O(n²) reference written here, a published worked example and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lmguide.evaluation.auc import delong_test


def _kernel_components(y: np.ndarray, s: np.ndarray):
    """The Mann-Whitney kernel ψ(x, r) = [x > r] + ½[x = r] over every (fake, real) pair, and its
    structural components: V10 per fake (mean over reals), V01 per real (mean over fakes), the AUC."""
    x, r = s[y], s[~y]
    psi = (x[:, None] > r[None, :]) + 0.5 * (x[:, None] == r[None, :])  # (m, n)
    return psi.mean(1), psi.mean(0), psi.mean()


def reference(labels, a, b, clusters=None) -> tuple[float, float, float, float]:
    """``(auc_a, auc_b, delta, se)`` straight from the definitions, loop by loop (no ranks): DeLong,
    DeLong & Clarke-Pearson (1988) eqs. for S10, S01; with ``clusters``, Obuchowski (1997) sec. 2."""
    y = np.asarray(labels).astype(bool)
    comps = [_kernel_components(y, np.asarray(s, np.float64)) for s in (a, b)]
    m, n = int(y.sum()), int((~y).sum())
    theta = [c[2] for c in comps]
    cov = np.zeros((2, 2))
    for k in range(2):
        for j in range(2):
            v10k, v01k, v10j, v01j = comps[k][0], comps[k][1], comps[j][0], comps[j][1]
            if clusters is None:
                s10 = sum((v10k[i] - theta[k]) * (v10j[i] - theta[j]) for i in range(m)) / (m - 1)
                s01 = sum((v01k[i] - theta[k]) * (v01j[i] - theta[j]) for i in range(n)) / (n - 1)
                cov[k, j] = s10 / m + s01 / n
                continue
            cl = np.asarray(clusters)
            cl_pos, cl_neg = cl[y], cl[~y]
            ids = sorted(set(cl.tolist()))
            i10 = len(set(cl_pos.tolist()))
            i01 = len(set(cl_neg.tolist()))
            s10 = s01 = s11_kj = s11_jk = 0.0
            for c in ids:
                mi, ni = int((cl_pos == c).sum()), int((cl_neg == c).sum())
                xk = v10k[cl_pos == c].sum() - mi * theta[k]
                xj = v10j[cl_pos == c].sum() - mi * theta[j]
                rk = v01k[cl_neg == c].sum() - ni * theta[k]
                rj = v01j[cl_neg == c].sum() - ni * theta[j]
                s10 += xk * xj
                s01 += rk * rj
                s11_kj += xk * rj
                s11_jk += xj * rk
            s10 *= i10 / ((i10 - 1) * m)
            s01 *= i01 / ((i01 - 1) * n)
            big_i = len(ids)
            s11_kj *= big_i / (big_i - 1)
            s11_jk *= big_i / (big_i - 1)
            cov[k, j] = s10 / m + s01 / n + (s11_kj + s11_jk) / (m * n)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return theta[0], theta[1], theta[0] - theta[1], float(np.sqrt(var))


def _data(n: int = 60, seed: int = 0, people: int | None = None, decimals: int | None = 1):
    """Two correlated scorers (rounded: many ties), labels, and a person per item."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    shared = rng.normal(size=n)
    a = y * 1.0 + shared + 0.5 * rng.normal(size=n)
    b = y * 0.6 + shared + 0.7 * rng.normal(size=n)
    if decimals is not None:
        a, b = a.round(decimals), b.round(decimals)
    who = rng.integers(0, people or n, n)
    return y, a, b, who


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plain_delong_equals_the_quadratic_reference(seed):
    y, a, b, _ = _data(seed=seed)
    res = delong_test(y, a, b)
    auc_a, auc_b, delta, se = reference(y, a, b)
    assert res["auc_a"] == pytest.approx(auc_a, abs=1e-12) and res["auc_b"] == pytest.approx(auc_b, abs=1e-12)
    assert abs(res["delta"] - delta) < 1e-10 and abs(res["se"] - se) < 1e-10
    assert res["clusters"] is None and res["n_pos"] + res["n_neg"] == len(y)


@pytest.mark.parametrize("seed", [0, 3])
def test_clustered_delong_equals_the_quadratic_reference(seed):
    y, a, b, who = _data(n=80, seed=seed, people=12)  # about 7 faces per person, both classes mixed
    res = delong_test(y, a, b, clusters=[f"person{p}" for p in who])
    _, _, delta, se = reference(y, a, b, clusters=who)
    assert abs(res["delta"] - delta) < 1e-10 and abs(res["se"] - se) < 1e-10
    assert res["clusters"] == len(set(who.tolist()))


def test_auc_agrees_with_sklearn_ties_included():
    y, a, b, _ = _data(n=200, seed=5, decimals=0)  # integer scores: heavy ties
    res = delong_test(y, a, b)
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert res["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)


def test_the_hanley_mcneil_ct_ratings_give_statas_printed_area_and_se():
    """The worked example: Hanley & McNeil (1982), "The meaning and use of the area under a receiver
    operating characteristic (ROC) curve", Radiology 143:29-36, Table 1: 109 CT images rated 1
    (definitely normal) to 5 (definitely abnormal); 58 normal: 33, 6, 6, 11, 2; 51 abnormal: 3, 2, 2, 11,
    33. Stata's Base Reference Manual, ``[R] roctab``, example 1, runs ``roctab disease rating`` on these
    data, with DeLong's standard error (roctab's default), and prints: Obs 109, ROC Area 0.8932,
    Std. Err. 0.0307, asymptotic normal 95 % interval 0.83295 to 0.95339."""
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    rating = np.r_[np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6), abnormal)]
    disease = np.r_[np.zeros(sum(normal)), np.ones(sum(abnormal))]
    res = delong_test(disease, rating, -rating)  # a second reader who reverses the scale
    assert res["n_pos"] + res["n_neg"] == 109
    assert round(res["auc_a"], 4) == 0.8932 and round(res["se_a"], 4) == 0.0307
    lo, hi = res["auc_a"] - 1.959964 * res["se_a"], res["auc_a"] + 1.959964 * res["se_a"]
    assert (round(lo, 5), round(hi, 5)) == (0.83295, 0.95339)
    # the reversed reader: AUC 1 - 0.8932, perfectly (negatively) correlated, so Δ = 2 AUC - 1, se 2 se_a
    assert res["delta"] == pytest.approx(2 * res["auc_a"] - 1) and res["se"] == pytest.approx(2 * res["se_a"])


def test_one_face_per_person_is_the_plain_test_exactly():
    y, a, b, _ = _data(seed=7)
    plain = delong_test(y, a, b)
    single = delong_test(y, a, b, clusters=[f"p{i}" for i in range(len(y))])
    for k in ("delta", "se", "z", "p", "se_a", "se_b"):
        assert single[k] == pytest.approx(plain[k], rel=1e-12, abs=1e-15), k


def test_duplicated_faces_narrow_the_plain_test_but_not_the_clustered_one():
    """Each person's face counted twice adds no information: the plain test treats the copies as new
    faces and its se shrinks (by about √2), the clustered one keeps the se of the faces once."""
    y, a, b, _ = _data(n=80, seed=11)
    once = delong_test(y, a, b)
    people = np.arange(len(y))
    yy, aa, bb, who = (np.r_[v, v] for v in (y, a, b, people))
    plain = delong_test(yy, aa, bb)
    clustered = delong_test(yy, aa, bb, clusters=who)
    assert plain["delta"] == pytest.approx(once["delta"]) == pytest.approx(clustered["delta"])
    assert clustered["se"] > plain["se"] * 1.3  # a wider interval
    assert plain["se"] == pytest.approx(once["se"] / np.sqrt(2), rel=0.05)
    assert clustered["se"] == pytest.approx(once["se"], rel=1e-10)
    width = [r["ci"][1] - r["ci"][0] for r in (plain, clustered)]
    assert width[1] > width[0] and clustered["p"] > plain["p"]


def test_p_value_interval_and_z_agree():
    from scipy.stats import norm

    for seed in range(5):
        y, a, b, who = _data(n=120, seed=seed, people=30, decimals=None)
        r = delong_test(y, a, b, clusters=who)
        assert r["z"] == pytest.approx(r["delta"] / r["se"])
        assert r["p"] == pytest.approx(2 * norm.sf(abs(r["z"])))
        assert (r["ci"][0] > 0 or r["ci"][1] < 0) == (r["p"] < 0.05)


def test_undefined_cases_say_why():
    y = np.array([0, 0, 0, 1])
    r = delong_test(np.zeros(5), np.arange(5), np.arange(5))
    assert r["p"] is None and "one class only" in r["reason"]
    r = delong_test(y, [0.1, 0.2, 0.3, 0.9], [0.2, 0.1, 0.3, 0.8])  # one fake: no spread of fakes
    assert r["se"] is None and "2 of each" in r["reason"]
    r = delong_test([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], [0.1, 0.9, 0.2, 0.8], clusters=["a", "a", "b", "b"])
    assert r["delta"] == 0 and r["p"] is None and "no variance" in r["reason"]
    with pytest.raises(ValueError, match="labels but"):
        delong_test([0, 1], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
