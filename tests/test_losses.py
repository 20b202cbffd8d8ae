"""Landmark loss forms against their formulas, gradients, and the composite."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lmguide.evaluation.alignment import attention_in_mask
from lmguide.losses.center import CenterLoss
from lmguide.losses.composite import CompositeLoss, Views
from lmguide.losses.landmark import FORMS, LandmarkLoss


def _mask():
    m = torch.zeros(2, 1, 4, 4)
    m[0, 0, 1:3, 1:3] = 1  # 4 of 16 pixels
    m[1, 0, 0, :] = 1  # 4 of 16 pixels
    return m


def _out(logits, maps):
    """What the composite reads of the model's Output."""
    return SimpleNamespace(logits=logits, maps=maps)


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


def test_simple_form_unscaled_is_the_formula_as_written_and_unbounded_below():
    maps, mask = _maps(), _mask()
    got = LandmarkLoss("simple", simple_scale="none")(maps, mask)
    a, L = maps.mean(1), mask[:, 0]  # the raw head average, no max scaling
    per = [-(a[i] * L[i]).mean() + 0.5 * (a[i] * (1 - L[i])).mean() for i in range(2)]
    assert got.item() == pytest.approx(sum(per).item() / 2, rel=1e-6)
    # attention grown 10x inside the mask: 10x lower unscaled; the default (max-scaled) stays in [-1, 0.5]
    big = maps * (1 + 9 * mask)
    assert LandmarkLoss("simple", simple_scale="none")(big, mask).item() < 5 * got.item()
    assert -1.0 <= LandmarkLoss("simple")(big * 1e3, mask).item() <= 0.5


def test_simple_scale_is_checked_by_name():
    with pytest.raises(ValueError, match="loss.landmark.simple_scale must be one of"):
        LandmarkLoss("simple", simple_scale="sum")


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
    total, parts = comp(_out(logits, maps), {"label": y, "mask": mask}, Views(aux, aug), center=center)
    want = (
        F.cross_entropy(logits, y) / 3
        + F.cross_entropy(aux, y)
        + F.cross_entropy(aug, y) * 2 / 3
        + 0.7
        + 0.3 * lm(maps, mask)
    )
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert set(parts) == {"ce_raw", "ce_crop", "ce_drop", "center", "landmark", "total"}


def test_zero_weight_terms_are_not_computed():
    class Boom(LandmarkLoss):
        def forward(self, *a, **k):
            raise AssertionError("landmark term computed although lambda_lm=0")

    comp = CompositeLoss(Boom(), lambda_lm=0.0, w_crop=0.0, w_drop=0.0, w_center=0.0)
    assert not comp.needs_views
    total, parts = comp(
        _out(torch.randn(2, 2), torch.rand(2, 1, 2, 2)),
        {"label": torch.tensor([0, 1]), "mask": torch.ones(2, 1, 2, 2)},
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


# -- every form against a direct implementation of its formula ------------------------------------
EPS = 1e-6


def _ref_simple(a, m):
    a = a / a.max()
    return -(a * m).mean() + 0.5 * (a * (1 - m)).mean()


def _ref_ratio(a, m):
    s_lm = (a * m).sum() / (m.sum() + EPS)
    s_non = (a * (1 - m)).sum() / ((1 - m).sum() + EPS)
    return -torch.log(s_lm / (s_lm + s_non + EPS))


def _ref_mse(a, m):
    n = (a - a.min()) / (a.max() - a.min() + EPS)
    return ((n - m) ** 2).mean()


def _ref_kl(a, m):
    p = m / m.sum()
    q = (a + EPS) / (a + EPS).sum()
    inside = p > 0
    return (p[inside] * torch.log(p[inside] / q[inside])).sum()


REFS = {"simple": _ref_simple, "ratio": _ref_ratio, "mse": _ref_mse, "kl": _ref_kl}


def _mean_ref(form, maps, mask, keep=None):
    a, m = maps.mean(1), mask[:, 0]
    vals = [REFS[form](a[i], m[i]) for i in range(len(a)) if m[i].sum() > 0 and (keep is None or keep[i])]
    return torch.stack(vals).mean()


@pytest.mark.parametrize("form", list(REFS))
def test_each_form_matches_its_formula(form):
    maps, mask = _maps(), _mask()
    got = LandmarkLoss(form, eps=EPS)(maps, mask)
    assert got.item() == pytest.approx(_mean_ref(form, maps, mask).item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("form", list(REFS))
def test_each_form_with_an_empty_mask_and_a_full_mask(form):
    """A sample with an empty mask contributes zero and is counted; a mask covering everything gives
    the formula's (finite) value; no NaN anywhere, in the loss or its gradient."""
    maps = _maps().requires_grad_()
    mask = torch.zeros(3, 1, 4, 4)
    mask[0] = _mask()[0]
    mask[2] = 1  # sample 1 empty, sample 2 full
    loss = LandmarkLoss(form, eps=EPS)
    maps3 = torch.cat([maps, maps[:1]])
    got = loss(maps3, mask)
    assert loss.last_empty == 1
    want = torch.stack([REFS[form](maps3[i].mean(0), mask[i, 0]) for i in (0, 2)]).mean()
    assert torch.isfinite(got) and got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    full = loss(maps, torch.ones(2, 1, 4, 4))
    assert torch.isfinite(full) and loss.last_empty == 0
    empty = loss(maps, torch.zeros(2, 1, 4, 4))
    assert empty.item() == 0.0 and loss.last_empty == 2
    (got + full + empty).backward()
    assert torch.isfinite(maps.grad).all()


def test_mse_and_kl_are_zero_at_their_optimum():
    mask = _mask()
    assert LandmarkLoss("mse")(mask.repeat(1, 2, 1, 1), mask).item() == pytest.approx(0.0, abs=1e-9)
    # attention spread over the mask exactly like the mask: KL 0 up to the ε-smoothing
    assert LandmarkLoss("kl")(mask * 5.0, mask).item() == pytest.approx(0.0, abs=1e-4)


def test_flat_attention_is_finite_for_every_form():
    mask = _mask()
    for form in FORMS[:4]:
        maps = torch.zeros(2, 2, 4, 4, requires_grad=True)  # e.g. every ReLU dead
        loss = LandmarkLoss(form)(maps, mask)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(maps.grad).all(), form


# -- gradient signs --------------------------------------------------------------------------------
def _grad(form, maps, mask):
    maps = maps.clone().requires_grad_()
    LandmarkLoss(form)(maps, mask).backward()
    return maps.grad[0].sum(0)  # (H, W): identity resize, so this is d loss / d Ā up to 1/M


@pytest.mark.parametrize("form", list(REFS))
def test_every_form_raises_attention_inside_and_lowers_it_outside(form):
    """d loss / d A < 0 inside the mask, > 0 outside, for a non-degenerate map. Documented exceptions:
    simple and mse normalise by the map's max (and min): those pixels also carry the scaling term."""
    g = torch.Generator().manual_seed(1)
    maps = 0.5 + 0.5 * torch.rand(1, 2, 4, 4, generator=g)  # every inside share < 1/4 (kl's condition)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 1:3] = 1
    grad = _grad(form, maps, mask)
    a = maps[0].mean(0).flatten()
    skip = torch.zeros(16, dtype=torch.bool)
    if form in ("simple", "mse"):
        skip[a.argmax()] = True
    if form == "mse":
        skip[a.argmin()] = True
    inside = mask[0, 0].flatten() > 0
    gf = grad.flatten()
    assert (gf[inside & ~skip] < 0).all(), gf
    assert (gf[~inside & ~skip] > 0).all(), gf


def test_kl_lowers_an_inside_pixel_that_has_more_than_its_share():
    """kl's exception: the target is the mask *as a distribution*, so an inside pixel holding more
    than 1/area of the attention is pushed down towards the others (d loss / d A > 0 there)."""
    maps = torch.full((1, 1, 4, 4), 0.1)
    maps[0, 0, 1, 1] = 10.0
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 1:3] = 1
    g = _grad("kl", maps, mask)
    assert g[1, 1] > 0 and (g[1:3, 1:3].flatten()[1:] < 0).all()
    # ratio has no such exception: more attention inside is always better
    assert _grad("ratio", maps, mask)[1, 1] < 0


def test_mse_min_and_max_pixels_only_carry_the_min_max_scaling_term():
    """mse's exception: a pixel at the map's max or min has no direct push (its normalised value is
    pinned at 1 or 0); its gradient is the scaling term alone, whose sign depends on the whole map.
    Here the outside is too bright, so even the outside min pixel is pushed *up* (d loss / d A < 0)."""
    maps = torch.full((1, 1, 4, 4), 0.5)
    maps[0, 0, 1, 1], maps[0, 0, 0, 0] = 1.0, 0.0  # max inside, min outside
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 1:3] = 1
    g = _grad("mse", maps, mask)
    n, L, d = maps[0, 0], mask[0, 0], 1.0 + EPS  # n: already min-max normalised; d = max - min + ε
    assert g[1, 1].item() == pytest.approx((-2 / (16 * d) * ((n - L) * n).sum()).item(), rel=1e-4)
    assert g[0, 0].item() == pytest.approx((2 / (16 * d) * ((n - L) * (n - 1)).sum()).item(), rel=1e-4)
    assert g[0, 0] < 0  # outside, yet raised
    others_in, others_out = L.bool().clone(), ~L.bool()
    others_in[1, 1], others_out[0, 0] = False, False
    assert (g[others_in] < 0).all() and (g[others_out] > 0).all()


# -- per_head --------------------------------------------------------------------------------------
def _regions(size=8):
    r = torch.zeros(1, 3, size, size)
    r[0, 0, 1:3, 1:7] = 1  # "eyes"
    r[0, 1, 3:5, 3:5] = 1  # "nose"
    r[0, 2, 5:7, 2:6] = 1  # "mouth"
    return r


def test_per_head_is_the_base_form_per_head_against_its_region():
    g = torch.Generator().manual_seed(2)
    maps, regions = torch.rand(2, 3, 8, 8, generator=g), _regions().repeat(2, 1, 1, 1)
    union = regions.amax(1, keepdim=True)
    for base in REFS:
        loss = LandmarkLoss("per_head", base=base, regions=["eyes", "nose", "mouth"])
        got = loss(maps, union, region_masks=regions)
        want = torch.stack(
            [torch.stack([REFS[base](maps[i, m], regions[i, m]) for m in range(3)]).mean() for i in range(2)]
        ).mean()
        assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-7), base


def test_per_head_pulls_head_m_to_region_m():
    maps = (0.5 + 0.1 * torch.rand(1, 3, 8, 8)).requires_grad_()
    regions = _regions()
    loss = LandmarkLoss("per_head", regions=["eyes", "nose", "mouth"])
    loss(maps, regions.amax(1, keepdim=True), region_masks=regions).backward()
    for m in range(3):
        g, own = maps.grad[0, m], regions[0, m].bool()
        assert (g[own] < 0).all() and (g[~own] > 0).all(), m  # up on its own region, down elsewhere
    # unlike the averaged forms, whose gradient is the same for every head
    avg = maps.detach().clone().requires_grad_()
    LandmarkLoss("ratio")(avg, regions.amax(1, keepdim=True)).backward()
    assert torch.allclose(avg.grad[0, 0], avg.grad[0, 1])


def test_per_head_cycles_regions_when_heads_outnumber_them_and_refuses_fewer():
    loss = LandmarkLoss("per_head", regions=["eyes", "nose", "mouth"])
    assert loss.head_regions(3) == [0, 1, 2]
    assert loss.head_regions(5) == [0, 1, 2, 0, 1]
    maps = (0.5 + 0.1 * torch.rand(1, 4, 8, 8)).requires_grad_()
    regions = _regions()
    loss(maps, regions.amax(1, keepdim=True), region_masks=regions).backward()
    g = maps.grad[0, 3]
    assert (g[regions[0, 0].bool()] < 0).all() and (g[~regions[0, 0].bool()] > 0).all()
    with pytest.raises(ValueError, match=r"attention\.num_maps.*\['eyes', 'nose', 'mouth'\]"):
        loss(torch.rand(1, 2, 8, 8), regions.amax(1, keepdim=True), region_masks=regions)
    with pytest.raises(ValueError, match="region_masks"):
        loss(torch.rand(1, 3, 8, 8), regions.amax(1, keepdim=True))


def test_per_head_empty_region_is_skipped_for_that_head():
    maps, regions = torch.rand(1, 3, 8, 8), _regions()
    regions[0, 1] = 0  # nose not visible
    loss = LandmarkLoss("per_head", regions=["eyes", "nose", "mouth"])
    got = loss(maps, regions.amax(1, keepdim=True), region_masks=regions)
    want = (_ref_ratio(maps[0, 0], regions[0, 0]) + _ref_ratio(maps[0, 2], regions[0, 2])) / 2
    assert got.item() == pytest.approx(want.item(), rel=1e-5) and loss.last_empty == 0
    zero = loss(maps, regions.amax(1, keepdim=True), region_masks=torch.zeros_like(regions))
    assert zero.item() == 0.0 and loss.last_empty == 1


# -- apply_to --------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", list(REFS))
def test_apply_to_real_and_fake_blend_choose_samples_and_targets(form):
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(3, 2, 4, 4, generator=g)
    mask = torch.cat([_mask(), _mask()[:1]])
    labels = torch.tensor([0, 1, 1])
    blend = torch.zeros(3, 1, 4, 4)
    blend[1, 0, :, :3] = 0.5  # an SBI fake blended at ratio 0.5; sample 2: a fake without blend mask
    real = LandmarkLoss(form, apply_to="real")
    assert real(maps, mask, labels).item() == pytest.approx(
        _mean_ref(form, maps, mask, keep=[True, False, False]).item(), rel=1e-5, abs=1e-7
    )
    fb = LandmarkLoss(form, apply_to="fake_blend")
    got = fb(maps, mask, labels, blend_mask=blend)
    assert fb.last_empty == 1  # the fake without a blend mask: zero, counted
    a = maps.mean(1)
    want = (REFS[form](a[0], mask[0, 0]) + REFS[form](a[1], blend[1, 0] / 0.5)) / 2  # blend scaled to max 1
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-7)
    with pytest.raises(ValueError, match="blend_mask"):
        fb(maps, mask, labels)


# -- composite: λ warm-up, focal CE, validation ------------------------------------------------------
def test_lambda_warmup_ramps_linearly():
    comp = CompositeLoss(LandmarkLoss(), lambda_lm=0.8, lambda_warmup_steps=10)
    assert [comp.lambda_at(s) for s in (0, 5, 10, 50)] == pytest.approx([0.0, 0.4, 0.8, 0.8])
    assert CompositeLoss(LandmarkLoss(), lambda_lm=0.8).lambda_at(0) == 0.8
    logits, y = torch.randn(2, 2), torch.tensor([0, 1])
    maps, mask = _maps(), _mask()
    out, batch = _out(logits, maps), {"label": y, "mask": mask}
    ce = F.cross_entropy(logits, y) / 3
    lm = LandmarkLoss()(maps, mask)
    for step, lam in ((0, 0.0), (5, 0.4), (10, 0.8)):
        total, parts = comp(out, batch, step=step)
        assert "landmark" in parts  # computed (and logged) even at weight 0
        assert total.item() == pytest.approx((ce + lam * lm).item(), rel=1e-6)


def test_focal_loss_matches_its_formula_and_is_ce_at_gamma_0():
    from lmguide.losses.composite import focal_loss

    g = torch.Generator().manual_seed(4)
    logits, y = torch.randn(6, 2, generator=g) * 3, torch.tensor([0, 1, 1, 0, 1, 1])
    w = torch.tensor([1.5, 0.75])
    p_t = logits.softmax(-1).gather(1, y[:, None]).squeeze(1)
    for gamma in (0.5, 2.0):
        per = -((1 - p_t) ** gamma) * torch.log(p_t)
        assert focal_loss(logits, y, gamma).item() == pytest.approx(per.mean().item(), rel=1e-5)
        want = (w[y] * per).sum() / w[y].sum()
        assert focal_loss(logits, y, gamma, w).item() == pytest.approx(want.item(), rel=1e-5)
    assert focal_loss(logits, y, 0.0, w).item() == pytest.approx(
        F.cross_entropy(logits, y, weight=w).item(), rel=1e-6
    )
    # every CE term of the composite becomes focal
    comp = CompositeLoss(LandmarkLoss(), lambda_lm=0.0, w_center=0.0, focal_gamma=2.0)
    aux, aug = logits.flip(0), logits * 0.5
    total, parts = comp(_out(logits, _maps()), {"label": y, "mask": _mask()}, Views(aux, aug), class_weight=w)
    for name, lg in (("ce_raw", logits), ("ce_crop", aux), ("ce_drop", aug)):
        assert parts[name].item() == pytest.approx(focal_loss(lg, y, 2.0, w).item(), rel=1e-6)
    # a saturated prediction (p_t = 1 in float32) keeps a finite gradient for gamma < 1
    sat = torch.tensor([[40.0, -40.0]], requires_grad=True)
    focal_loss(sat, torch.tensor([0]), 0.5).backward()
    assert torch.isfinite(sat.grad).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(apply_to="fakes"), "loss.landmark.apply_to"),
        (dict(form="per_head"), "loss.landmark.regions"),
        (dict(form="ratio", regions=["eyes"]), "loss.landmark.regions"),
        (dict(form="per_head", base="per_head", regions=["eyes"]), "loss.landmark.base"),
        (dict(eps=0.0), "loss.landmark.eps"),
    ],
)
def test_bad_landmark_values_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LandmarkLoss(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(focal_gamma=-1.0), "loss.focal_gamma"),
        (dict(lambda_warmup_steps=-1), "loss.lambda_warmup_steps"),
        (dict(lambda_warmup_steps=2.5), "loss.lambda_warmup_steps"),
    ],
)
def test_bad_composite_values_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompositeLoss(LandmarkLoss(), **kwargs)


# -- end to end: the composed configs on the demo data ----------------------------------------------
def _demo(overrides, cache_dir, tmp_path):
    import hydra

    from lmguide.data.datamodule import for_model
    from tests.conftest import FAST_DATA, compose_cfg

    cfg = compose_cfg(FAST_DATA + ["data.image_size=64", *overrides], tmp_path, cache_dir)
    model = hydra.utils.instantiate(cfg.model)
    dm = for_model(cfg.data, model)
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    return cfg, dm, model


def _batch(ds, n=4):
    from torch.utils.data import default_collate

    torch.manual_seed(0)
    return default_collate([ds[i] for i in range(n)])  # items 2k real, 2k + 1 its SBI fake


@pytest.fixture(autouse=False)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss=simple"],
        ["loss=ratio"],
        ["loss=mse"],
        ["loss=kl"],
        ["loss=per_head", "attention.num_maps=3", "landmarks=eyes_nose_mouth"],
        ["loss.landmark.apply_to=fake_blend", "loss.focal_gamma=2", "loss.lambda_warmup_steps=4"],
    ],
    ids=["simple", "ratio", "mse", "kl", "per_head", "fake_blend_focal_warmup"],
)
def test_one_training_step_through_the_composed_config(overrides, cache_dir, tmp_path, _one_thread):
    cfg, dm, model = _demo(overrides, cache_dir, tmp_path)
    logged = {}
    model.log = lambda name, value, *a, **k: logged.__setitem__(name, value)
    batch = next(iter(dm.train_dataloader()))
    form, apply_to = cfg.loss.landmark.form, cfg.loss.landmark.apply_to
    assert ("region_masks" in batch) == (form == "per_head")
    assert ("blend_mask" in batch) == (apply_to == "fake_blend")
    if form == "per_head":
        assert batch["region_masks"].shape == (4, 3, 64, 64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = model.attention.conv[0].weight.detach().clone()
    loss = model.training_step(batch, 0)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert torch.isfinite(logged["train/loss/landmark"]) and logged["train/loss/landmark"] != 0
    assert logged["train/lambda_lm"] == (0.0 if cfg.loss.lambda_warmup_steps else 1.0)
    assert not torch.equal(before, model.attention.conv[0].weight)


def test_per_head_trains_with_lightning_and_logs_lambda(cache_dir, tmp_path, _one_thread):
    import lightning as L

    over = ["loss=per_head", "attention.num_maps=3", "loss.lambda_warmup_steps=2"]
    cfg, dm, model = _demo(over, cache_dir, tmp_path)
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=dm)
    m = trainer.callback_metrics
    assert m["train/lambda_lm"].item() == pytest.approx(0.5)  # the second step: λ·1/2
    assert torch.isfinite(m["train/loss/landmark"])


def test_fake_blend_gives_self_blended_fakes_a_landmark_loss_on_their_blend_mask(cache_dir, tmp_path):
    cfg, dm, model = _demo(["loss.landmark.apply_to=fake_blend", "attention.num_maps=2"], cache_dir, tmp_path)
    batch = _batch(dm.datasets["train"])
    fake = batch["label"] == 1
    assert fake.tolist() == [False, True, False, True]
    blend = batch["blend_mask"]
    assert blend.shape == (4, 1, 64, 64)
    assert (blend[~fake] == 0).all()
    sbi = fake & (blend.flatten(1).amax(1) > 0)  # fakes whose blend actually altered the face
    assert sbi.any()
    assert not torch.allclose(blend[sbi], batch["mask"][sbi])  # a different target than the landmarks
    with torch.no_grad():
        maps = model(batch["image"]).maps
    lm = model.loss.landmark
    on_fakes = lm(maps[fake], batch["mask"][fake], batch["label"][fake], blend_mask=blend[fake])
    assert on_fakes.item() > 0 and lm.last_empty == int((fake & ~sbi).sum())
    target = blend[sbi] / blend[sbi].flatten(1).amax(1)[:, None, None, None]
    assert on_fakes.item() == pytest.approx(LandmarkLoss("ratio")(maps[sbi], target).item(), rel=1e-5)
    # apply_to=real leaves the fakes out; the evaluation splits never carry the extra targets
    assert LandmarkLoss("ratio", apply_to="real")(maps[fake], batch["mask"][fake], batch["label"][fake]) == 0
    assert "blend_mask" not in dm.datasets["val"][0]


def test_region_and_blend_masks_follow_the_augmentation_of_the_landmark_mask(cache_dir, tmp_path):
    cfg, dm, _ = _demo(["loss=per_head", "attention.num_maps=3", "loss.landmark.apply_to=fake_blend"],
                       cache_dir, tmp_path)  # fmt: skip
    ds = dm.datasets["train"]
    assert dm.region_masks == ("eyes", "nose", "mouth")
    for i in range(6):  # random flips and affines: seeded per item, the same for every target
        torch.manual_seed(i)
        item = ds[i]
        # binary regions: their union is the mask, up to the linear interpolation where two regions
        # touch (the max of interpolated masks is at most the interpolated max)
        union = item["region_masks"].amax(0, keepdim=True)
        assert (union <= item["mask"] + 1e-6).all()
        assert (item["mask"] - union).mean() < 1e-3 and union.sum() > 0
        if item["label"] == 0:
            assert (item["blend_mask"] == 0).all()
    # the default path is untouched: same image and mask with or without the extra targets
    _, plain, _ = _demo([], cache_dir, tmp_path)
    torch.manual_seed(3)
    a = plain.datasets["train"][3]
    torch.manual_seed(3)
    b = ds[3]
    assert set(a) == {"image", "mask", "label", "video"}
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_clip_batches_carry_per_frame_region_and_blend_masks(cache_dir, tmp_path, _one_thread):
    over = ["backbone=efficientnet_lstm", "backbone.clip_frames=2", "loss=per_head", "attention.num_maps=3",
            "loss.landmark.apply_to=fake_blend", "loss.w_crop=0", "loss.w_drop=0"]  # fmt: skip
    cfg, dm, model = _demo(over, cache_dir, tmp_path)
    batch = _batch(dm.datasets["train"], 2)
    assert batch["region_masks"].shape == (2, 2, 3, 64, 64) and batch["blend_mask"].shape == (2, 2, 1, 64, 64)
    model.log = lambda *a, **k: None
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)


def test_per_head_needs_as_many_maps_as_regions_at_build_time(tmp_path):
    import hydra

    from tests.conftest import compose_cfg

    cfg = compose_cfg(["loss=per_head", "attention.num_maps=2", "data.image_size=64"], tmp_path)
    with pytest.raises(Exception, match=r"attention\.num_maps.*eyes.*nose.*mouth"):  # hydra wraps it
        hydra.utils.instantiate(cfg.model)
    cfg = compose_cfg(["loss=per_head", "attention=cbam", "data.image_size=64"], tmp_path)
    with pytest.raises(Exception, match="gives 1 map"):
        hydra.utils.instantiate(cfg.model)


def test_per_head_on_vit_cls_uses_the_vit_heads(tmp_path, _one_thread):
    import hydra

    from tests.conftest import compose_cfg

    cfg = compose_cfg(["backbone=vit", "attention=vit_cls", "loss=per_head", "data.image_size=64"], tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    assert model.attention.num_heads == 3  # vit_tiny: one head per region
    model.log = lambda *a, **k: None
    regions = torch.zeros(2, 3, 64, 64)
    regions[:, 0, 10:20], regions[:, 1, 25:40, 25:40], regions[:, 2, 45:55] = 1, 1, 1
    batch = {
        "image": torch.randn(2, 3, 64, 64),
        "mask": regions.amax(1, keepdim=True),
        "region_masks": regions,
        "label": torch.tensor([0, 1]),
        "video": torch.tensor([0, 1]),
    }
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
