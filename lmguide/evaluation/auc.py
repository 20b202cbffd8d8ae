"""The statistics of an AUC: when it is undefined, the AUC with sample weights, the person-clustered
bootstrap interval (:func:`bootstrap_auc`) and DeLong's test of two correlated AUCs on the same faces
(:func:`delong_test`, Obuchowski's clustered form). sklearn's ``roc_auc_score`` and scipy are the
references in the tests.
"""

from __future__ import annotations

import numpy as np
import torch

#: metrics that need both classes (threshold-free ranking metrics, and the EER)
NEEDS_BOTH_CLASSES = ("auc", "ap", "eer")


def undefined_reason(labels) -> str | None:
    """Why AUC/AP/EER are undefined on these labels (one class only, or nothing), else None."""
    y = torch.as_tensor(labels).long().reshape(-1)
    n_fake = int(y.sum())
    n_real = len(y) - n_fake
    if n_real and n_fake:
        return None
    return f"undefined: one class only ({n_real} real, {n_fake} fake); AUC, AP and EER need both"


def _auc_parts(scores, labels, weights) -> tuple[np.ndarray, np.ndarray]:
    """``(num, den)`` of :func:`weighted_auc` for B weightings (B, n): the weighted concordant (fake,
    real) pairs, ties one half, and the weighted pair count."""
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    w = np.atleast_2d(np.asarray(weights, np.float64))  # (B, n)
    _, inv = np.unique(s, return_inverse=True)  # score groups in ascending order
    g = inv.max() + 1 if len(inv) else 0
    onehot = np.zeros((len(s), g))
    onehot[np.arange(len(s)), inv] = 1.0
    pos = (w * y) @ onehot  # (B, G) fake weight per score group
    neg = (w * ~y) @ onehot  # (B, G) real weight per score group
    below = np.cumsum(neg, axis=1) - neg  # real weight strictly below each group
    return (pos * (below + 0.5 * neg)).sum(1), pos.sum(1) * neg.sum(1)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def weighted_auc(scores, labels, weights) -> np.ndarray:
    """ROC AUC (ties count one half) of ``scores`` with per-item ``weights`` (B, n), for B weightings at
    once; the Mann-Whitney form: sum over (fake i, real j) of w_i w_j [s_i > s_j] (+ 1/2 if equal) over
    the product of the class weights. Unit weights give the ordinary AUC. NaN where a class has no weight."""
    return _ratio(*_auc_parts(scores, labels, weights))


def _cluster_pairs(scores, labels, cl: np.ndarray, c: int):
    """``(A, P, N)``: A[i, j] the (fake of cluster i, real of cluster j) pairs the fake wins, ties one
    half (C, C); fakes and reals per cluster (C,)."""
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    fs, fc, rs, rc = s[y], cl[y], s[~y], cl[~y]
    a = np.zeros((c, c))
    for j in np.unique(rc):
        r = np.sort(rs[rc == j])
        wins = (np.searchsorted(r, fs, "left") + np.searchsorted(r, fs, "right")) / 2  # below + ties / 2
        a[:, j] = np.bincount(fc, wins, minlength=c)
    return a, np.bincount(fc, minlength=c).astype(float), np.bincount(rc, minlength=c).astype(float)


def resampled_auc(scores, labels, cluster_index, counts) -> np.ndarray:
    """AUC of each of B resamples (B,) that draw cluster ``c`` ``counts[b, c]`` times (``cluster_index``:
    each item's cluster 0..C-1); NaN where a class has no weight. A cluster drawn twice contributes its own
    (fake, real) pairs once per copy, never between its copies (see :func:`bootstrap_auc`): from the
    cluster-by-cluster pair table, w A wᵀ less (w² - w) on its diagonal."""
    w = np.asarray(counts, np.float64)  # (B, C)
    a, pos, neg = _cluster_pairs(scores, labels, np.asarray(cluster_index), w.shape[1])
    extra = w * (w - 1.0)  # weight w^2 of a cluster's own pairs, less the w they should have
    num = ((w @ a) * w).sum(1) - extra @ np.diag(a)
    return _ratio(num, (w @ pos) * (w @ neg) - extra @ (pos * neg))


def bootstrap_auc(scores, labels, clusters, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """AUC with a percentile bootstrap interval that resamples whole clusters (videos or people).

    Frames of one video (or faces of one person) are not independent: resampling frames would make the
    interval far too narrow. Each replicate draws as many clusters as there are, with replacement, and
    weighs every item by how often its cluster was drawn; replicates lacking a class are dropped (their
    share is reported as ``dropped``). A cluster drawn twice contributes its own (fake, real) pairs once
    per copy, not between its copies: those would be pairs of one person counted as pairs of two, and
    as the AUC of a person's own fakes against their own faces is often not the AUC across people, they
    would shift every replicate (the demo's self-blends: within 0.86, across 0.75, and the interval sat
    above the estimate). Returns ``{"auc", "lo", "hi", "clusters", "n_boot", "dropped"}``; ``auc``,
    ``lo`` and ``hi`` are None with a ``reason`` when the AUC is undefined (one class only).
    """
    s = torch.as_tensor(scores).detach().float().cpu().numpy().reshape(-1)
    y = torch.as_tensor(labels).detach().long().cpu().numpy().reshape(-1)
    names = sorted(set(clusters))
    index = {c: i for i, c in enumerate(names)}
    cl = np.array([index[c] for c in clusters], dtype=np.int64)
    out = {"auc": None, "lo": None, "hi": None, "clusters": len(names), "n_boot": n_boot, "dropped": 0.0}
    reason = undefined_reason(y)
    if reason:
        return {**out, "reason": reason}
    out["auc"] = float(weighted_auc(s, y, np.ones(len(s)))[0])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=n_boot)  # (B, C)
    reps = resampled_auc(s, y, cl, counts)
    ok = reps[~np.isnan(reps)]
    out["dropped"] = float(1 - len(ok) / n_boot)
    if len(ok):
        alpha = (1 - level) / 2
        out["lo"], out["hi"] = (float(v) for v in np.quantile(ok, [alpha, 1 - alpha]))
    return out


def delong_test(labels, scores_a, scores_b, clusters=None, level: float = 0.95) -> dict:
    """DeLong's test of two correlated ROC AUCs, the two scorers rating the same items (DeLong, DeLong &
    Clarke-Pearson 1988, Biometrics 44:837), from midranks in O(n log n) (Sun & Xu 2014, IEEE Signal
    Processing Letters 21:1389).

    Each fake's placement V10 is the share of reals it outscores (ties one half), each real's V01 the
    share of fakes that outscore it; AUC is their mean, and the covariance of the two AUCs is that of the
    placements, S10 / m + S01 / n. With ``clusters`` (a person per item: one person's faces are not
    independent) it is Obuchowski's nonparametric clustered form (Obuchowski 1997, Biometrics 53:567):
    the placements are summed per cluster, and with M fakes, N reals, I clusters of which I10 hold a
    fake and I01 a real, S10 = I10 / ((I10 - 1) M) Σ (V10_i. - m_i θ)², S01 likewise, and a within-
    cluster term S11 = I / (I - 1) Σ (V10_i. - m_i θ)(V01_i. - n_i θ), var = S10/M + S01/N + 2 S11/(MN).
    With one item per cluster it is DeLong's test exactly.

    Returns ``delta`` (AUC_a - AUC_b), its ``se``, ``z``, two-sided ``p`` and ``ci`` (at ``level``, the
    normal interval), ``auc_a``, ``auc_b``, their ``se_a``, ``se_b``, ``n_pos``, ``n_neg`` and
    ``clusters`` (None without); the statistics are None with a ``reason`` when a class is missing,
    has fewer than two items (clusters), or the difference has no variance.
    """
    from scipy.special import ndtr, ndtri
    from scipy.stats import rankdata

    def arr(x):
        return torch.as_tensor(x).detach().cpu().double().numpy().reshape(-1)

    y = arr(labels).astype(bool)
    s = np.stack([arr(scores_a), arr(scores_b)])  # (2, n)
    if s.shape[1] != len(y):
        raise ValueError(f"{len(y)} labels but {s.shape[1]} scores")
    m, n = int(y.sum()), int((~y).sum())
    keys = ("delta", "se", "z", "p", "ci", "auc_a", "auc_b", "se_a", "se_b")
    out: dict = {**dict.fromkeys(keys), "n_pos": m, "n_neg": n, "clusters": None}
    reason = undefined_reason(y)
    if reason:
        return {**out, "reason": reason}
    ranks = rankdata(s, axis=1)  # midranks: ties count one half
    v10 = (ranks[:, y] - rankdata(s[:, y], axis=1)) / n  # (2, m): reals below each fake
    v01 = 1.0 - (ranks[:, ~y] - rankdata(s[:, ~y], axis=1)) / m  # (2, n): fakes above each real
    auc = v10.mean(1)
    out["auc_a"], out["auc_b"] = float(auc[0]), float(auc[1])
    if clusters is None:
        units = (m, n)
        cov = np.cov(v10) / m + np.cov(v01) / n if min(units) > 1 else None  # (2, 2)
    else:
        cl = np.unique(np.asarray(list(clusters)), return_inverse=True)[1].reshape(-1)
        if len(cl) != len(y):
            raise ValueError(f"{len(y)} labels but {len(cl)} cluster ids")
        c = int(cl.max()) + 1
        out["clusters"] = c
        sums = [np.stack([np.bincount(cl[k], w, minlength=c) for w in v]) for k, v in ((y, v10), (~y, v01))]
        mi, ni = np.bincount(cl[y], minlength=c), np.bincount(cl[~y], minlength=c)
        dx, dy = sums[0] - mi * auc[:, None], sums[1] - ni * auc[:, None]  # (2, C)
        units = (int((mi > 0).sum()), int((ni > 0).sum()))  # I10, I01
        cov = None
        if min(units) > 1:
            s10 = units[0] / ((units[0] - 1) * m) * dx @ dx.T
            s01 = units[1] / ((units[1] - 1) * n) * dy @ dy.T
            s11 = c / (c - 1) * dx @ dy.T
            cov = s10 / m + s01 / n + (s11 + s11.T) / (m * n)
    if cov is None:
        what = "clusters with a" if clusters is not None else "items:"
        return {**out, "reason": f"undefined: {what} fake {units[0]}, real {units[1]}; 2 of each needed"}
    out["se_a"], out["se_b"] = (float(v) for v in np.sqrt(np.clip(np.diag(cov), 0, None)))
    delta, var = float(auc[0] - auc[1]), float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    out["delta"] = delta
    if var <= 1e-24:
        return {**out, "se": 0.0, "reason": "undefined: the difference has no variance (e.g. equal scores)"}
    se = out["se"] = var**0.5
    half = float(ndtri(0.5 + level / 2)) * se
    out.update(z=delta / se, p=float(2 * ndtr(-abs(delta / se))), ci=(delta - half, delta + half))
    return out
