"""Metrics against sklearn, video aggregation, and the WS-DAN views on edge cases."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from lmguide.evaluation.metrics import VideoScores, detection_metrics
from lmguide.models.views import attention_crop, attention_drop


def _sklearn_eer(y, s):
    fpr, tpr, _ = roc_curve(y, s)
    fnr = 1 - tpr
    i = np.nanargmin(np.abs(fnr - fpr))
    return (fpr[i] + fnr[i]) / 2


def test_frame_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.25), 0, 1)
    m = detection_metrics("val/")
    m.update(torch.tensor(s, dtype=torch.float32), torch.tensor(y))
    got = {k: v.item() for k, v in m.compute().items()}
    assert got["val/auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-5)
    assert got["val/ap"] == pytest.approx(average_precision_score(y, s), abs=1e-4)
    assert got["val/eer"] == pytest.approx(_sklearn_eer(y, s), abs=0.01)
    assert got["val/acc"] == pytest.approx(((s > 0.5) == y).mean(), abs=1e-6)


def test_video_scores_group_by_id():
    v = VideoScores()
    v.update(torch.tensor([0.2, 0.4, 0.9]), torch.tensor([0, 0, 1]), torch.tensor([5, 5, 2]))
    v.update(torch.tensor([0.6]), torch.tensor([0]), torch.tensor([5]))
    scores, labels = v.compute()
    assert torch.allclose(scores, torch.tensor([0.9, 0.4])) and labels.tolist() == [1, 0]  # ids sorted: 2, 5


def test_crop_of_empty_map_is_the_whole_image():
    x = torch.rand(2, 3, 16, 16)
    out = attention_crop(x, torch.zeros(2, 4, 4, 4))
    assert out.shape == x.shape
    assert torch.allclose(out, x, atol=1e-5)


def test_crop_zooms_into_the_attended_box():
    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:16, 8:16] = 1.0
    maps = torch.zeros(1, 1, 32, 32)
    maps[..., 8:16, 8:16] = 1.0
    out = attention_crop(x, maps, threshold=(0.5, 0.5), padding=0.0)
    assert out.mean() > 0.9  # the box is (almost) all the bright square


def test_drop_edge_cases():
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(attention_drop(x, torch.zeros(2, 2, 4, 4)), x)  # nothing attended: nothing dropped
    assert attention_drop(x, torch.ones(2, 2, 4, 4)).abs().sum() == 0  # everything attended: all dropped
    maps = torch.zeros(2, 1, 8, 8)
    maps[:, :, :4] = 1
    out = attention_drop(x, maps, threshold=(0.5, 0.5))
    assert (out[:, :, :3] == 0).all() and torch.equal(out[:, :, 5:], x[:, :, 5:])
