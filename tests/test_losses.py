"""Landmark loss forms against their formulas, gradients, and the composite."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmguide.losses.center import CenterLoss
from lmguide.losses.composite import CompositeLoss
from lmguide.losses.landmark import LandmarkLoss, attention_in_mask


def _mask():
    m = torch.zeros(2, 1, 4, 4)
    m[0, 0, 1:3, 1:3] = 1  # 4 of 16 pixels
    m[1, 0, 0, :] = 1  # 4 of 16 pixels
    return m


def _maps():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 4, 4, generator=g)  # same size as the mask: resizing is the identity


def test_simple_form_matches_formula():
    maps, mask = _maps(), _mask()
    got = LandmarkLoss("simple")(maps, mask)
    a = maps.mean(1)  # average over heads
    a = a / a.amax(dim=(1, 2), keepdim=True)  # per-sample max scaling
    L = mask[:, 0]
    per = [-(a[i] * L[i]).mean() + 0.5 * (a[i] * (1 - L[i])).mean() for i in range(2)]
    assert got.item() == pytest.approx(sum(per).item() / 2, rel=1e-6)


def test_ratio_form_matches_formula():
    maps, mask = _maps(), _mask()
    eps = 1e-6
    got = LandmarkLoss("ratio", eps=eps)(maps, mask)
    a = maps.mean(1)
    L = mask[:, 0]
    want = 0.0
    for i in range(2):
        s_lm = (a[i] * L[i]).sum() / (L[i].sum() + eps)
        s_non = (a[i] * (1 - L[i])).sum() / ((1 - L[i]).sum() + eps)
        want += -math.log(s_lm / (s_lm + s_non + eps))
    assert got.item() == pytest.approx(want / 2, rel=1e-6)


def test_ratio_is_log2_for_uniform_attention():
    mask = _mask()
    got = LandmarkLoss("ratio")(torch.ones(2, 4, 4, 4), mask)
    assert got.item() == pytest.approx(math.log(2), rel=1e-5)


def test_attention_is_resized_to_the_mask():
    maps = torch.rand(1, 2, 2, 2)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :4] = 1
    up = F.interpolate(maps, size=(8, 8), mode="bilinear", align_corners=False)
    a = up.mean(1)[0]
    s_lm, s_non = (a * mask[0, 0]).sum() / 16, (a * (1 - mask[0, 0])).sum() / 48
    want = -math.log(s_lm / (s_lm + s_non + 1e-6))
    assert LandmarkLoss("ratio")(maps, mask).item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("form", ["simple", "ratio"])
def test_gradient_pushes_attention_into_the_mask(form):
    maps = torch.full((1, 2, 4, 4), 0.5, requires_grad=True)
    maps.data[0, 0, 0, 0] = 1.0  # a unique max so max-scaling has a well-defined gradient elsewhere
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 1:3] = 1
    LandmarkLoss(form)(maps, mask).backward()
    g = maps.grad[0].sum(0)
    inside, outside = g[1:3, 1:3], g[mask[0, 0] == 0]
    # gradient descent raises attention inside (negative gradient) and lowers it outside
    assert (inside < 0).all()
    outside_not_max = outside[1:]  # pixel (0, 0) is the max: its gradient also carries the scaling term
    assert (outside_not_max > 0).all()


def test_empty_mask_contributes_zero_and_is_counted():
    maps = torch.rand(2, 3, 4, 4, requires_grad=True)
    mask = _mask()
    mask[1] = 0
    loss = LandmarkLoss("ratio")
    full = loss(maps, mask)
    assert loss.last_empty == 1
    assert torch.isfinite(full)
    assert full.item() == pytest.approx(loss(maps[:1], mask[:1]).item())
    zero = loss(maps, torch.zeros_like(mask))
    assert zero.item() == 0.0 and loss.last_empty == 2
    zero.backward()  # still part of the graph, no NaN
    assert torch.isfinite(maps.grad).all()


def test_apply_to_real_only():
    maps, mask = _maps(), _mask()
    labels = torch.tensor([1, 0])
    only_real = LandmarkLoss("ratio", apply_to="real")(maps, mask, labels)
    assert only_real.item() == pytest.approx(LandmarkLoss("ratio")(maps[1:], mask[1:]).item())


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="form"):
        LandmarkLoss("cosine")


def test_attention_in_mask_share():
    mask = _mask()
    uniform = attention_in_mask(torch.ones(2, 3, 4, 4), mask)
    assert torch.allclose(uniform, torch.tensor([0.25, 0.25]))
    focused = torch.zeros(2, 1, 4, 4)
    focused[0, 0, 1, 1] = 1
    focused[1, 0, 3, 3] = 1  # outside sample 1's mask
    assert torch.allclose(attention_in_mask(focused, mask), torch.tensor([1.0, 0.0]))


def test_composite_weights_and_parts():
    torch.manual_seed(0)
    logits, aux, aug = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2)
    y = torch.tensor([0, 1, 0, 1])
    maps, mask = torch.rand(4, 2, 4, 4), torch.cat([_mask(), _mask()])
    center = torch.tensor(0.7)
    lm = LandmarkLoss("ratio")
    comp = CompositeLoss(lm, lambda_lm=0.3)
    total, parts = comp(
        logits=logits, labels=y, maps=maps, mask=mask, center=center, logits_aux=aux, logits_aug=aug
    )
    want = (
        F.cross_entropy(logits, y) / 3
        + F.cross_entropy(aux, y)
        + F.cross_entropy(aug, y) * 2 / 3
        + 0.7
        + 0.3 * lm(maps, mask)
    )
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert set(parts) == {"ce_raw", "ce_aux", "ce_aug", "center", "landmark", "total"}


def test_zero_weight_terms_are_not_computed():
    class Boom(LandmarkLoss):
        def forward(self, *a, **k):
            raise AssertionError("landmark term computed although lambda_lm=0")

    comp = CompositeLoss(Boom(), lambda_lm=0.0, w_aux=0.0, w_aug=0.0, w_center=0.0)
    assert not comp.needs_views
    total, parts = comp(
        logits=torch.randn(2, 2),
        labels=torch.tensor([0, 1]),
        maps=torch.rand(2, 1, 2, 2),
        mask=torch.ones(2, 1, 2, 2),
    )
    assert set(parts) == {"ce_raw", "total"}


def test_negative_weight_is_refused():
    with pytest.raises(ValueError, match="lambda_lm"):
        CompositeLoss(LandmarkLoss(), lambda_lm=-0.1)


def test_center_moving_average():
    c = CenterLoss(num_features=2, beta=0.5)
    f1 = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 2.0]])
    y1 = torch.tensor([0, 0, 1])
    loss = c(f1, y1)  # centers start at 0: mean squared norm
    assert loss.item() == pytest.approx((4 + 16 + 4) / 3)
    assert torch.allclose(c.centers, torch.tensor([[1.5, 0.0], [0.0, 1.0]]))  # 0 + 0.5 * (mean - 0)
    c(torch.tensor([[1.0, 1.0]]), torch.tensor([1]))
    assert torch.allclose(c.centers, torch.tensor([[1.5, 0.0], [0.5, 1.0]]))  # class 0 untouched
    c.eval()
    c(f1, y1)
    assert torch.allclose(c.centers, torch.tensor([[1.5, 0.0], [0.5, 1.0]]))  # no update in eval
