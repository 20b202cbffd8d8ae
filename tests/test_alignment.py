"""Attention against the landmark regions and between heads (lmguide.evaluation.alignment), checked against
direct numpy computations; the per-region shares and map diversity reach the run summary and metrics.json."""

from __future__ import annotations

import math

import numpy as np
import torch

from lmguide.evaluation.alignment import attention_in_mask, attention_in_regions, map_correlation
from lmguide.evaluation.run_report import split_statistics, summary_keys


def _maps(b: int = 3, m: int = 4, h: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, m, h, h, generator=torch.Generator().manual_seed(seed))


def test_map_correlation_is_the_mean_off_diagonal_pearson_correlation():
    maps = _maps()
    got = map_correlation(maps)
    for i in range(maps.shape[0]):
        c = np.corrcoef(maps[i].flatten(1).numpy())  # (M, M)
        ref = c[~np.eye(4, dtype=bool)].mean()
        assert math.isclose(float(got[i]), ref, abs_tol=1e-6)


def test_map_correlation_reads_1_for_one_map_repeated_and_nan_for_a_single_map():
    one = _maps(2, 1)
    scaled = one.expand(2, 4, 8, 8) * torch.tensor([1, 2, 3, 4.0])[:, None, None]  # same map, other scales
    torch.testing.assert_close(map_correlation(scaled), torch.ones(2))
    assert map_correlation(one).isnan().all()
    # disjoint halves: negatively correlated heads, far from collapse
    half = torch.zeros(1, 2, 4, 4)
    half[0, 0, :2], half[0, 1, 2:] = 1, 1
    assert float(map_correlation(half)) == -1.0


def test_region_shares_sum_to_the_share_in_their_union_when_disjoint():
    maps = _maps(2, 3, 8)
    regions = torch.zeros(2, 3, 32, 32)
    regions[:, 0, 4:10, 4:28] = 1  # eyes
    regions[:, 1, 12:20, 12:20] = 1  # nose
    regions[:, 2, 22:28, 8:24] = 1  # mouth
    shares = attention_in_regions(maps, regions)  # (B, R)
    union = attention_in_mask(maps, regions.amax(1, keepdim=True))
    torch.testing.assert_close(shares.sum(1), union)
    # against a direct computation: bilinear resize, mean over heads, mass inside / total mass
    a = torch.nn.functional.interpolate(maps, size=(32, 32), mode="bilinear", align_corners=False).mean(1)
    ref = (a[:, None] * regions).sum((2, 3)) / a.sum((1, 2))[:, None]
    torch.testing.assert_close(shares, ref)


def test_attention_on_one_region_only_reads_1_there_and_0_elsewhere():
    maps = torch.zeros(1, 2, 4, 4)
    maps[0, :, 0, 0] = 1.0  # all the mass in the top-left cell
    regions = torch.zeros(1, 2, 4, 4)
    regions[0, 0, 0, 0] = 1
    regions[0, 1, 3, 3] = 1
    torch.testing.assert_close(attention_in_regions(maps, regions), torch.tensor([[1.0, 0.0]]))


def test_summary_and_metrics_json_carry_region_shares_and_map_diversity():
    n = 8
    res = {
        "prob": torch.linspace(0, 1, n),
        "label": torch.tensor([0, 1] * 4),
        "video": [f"v{i}" for i in range(n)],
        "person": [f"p{i % 4}" for i in range(n)],
        "attn_in_lm": torch.full((n,), 0.3),
        "attn_eyes": torch.full((n,), 0.1),
        "attn_mouth": torch.full((n,), 0.2),
        "map_corr": torch.full((n,), 0.5),
    }
    out = split_statistics({"test": res})
    assert math.isclose(out["test/attn_eyes"], 0.1, rel_tol=1e-6)
    assert math.isclose(out["test/attn_mouth"], 0.2, rel_tol=1e-6)
    assert math.isclose(out["test/map_corr"], 0.5)
    one_map = split_statistics({"test": {**res, "map_corr": torch.full((n,), float("nan"))}})
    assert "test/map_corr" not in one_map  # a single map has no diversity to report
    keys = summary_keys({**out, "test/attn_in_lm": 0.3, "swaps/attn_in_lm": 0.3})
    i = keys.index("attn_in_lm")
    assert keys[i + 1 : i + 3] == ["attn_eyes", "attn_mouth"] and keys[-1] == "map_corr"
    assert keys.count("attn_in_lm") == 1
