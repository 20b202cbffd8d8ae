"""Classification heads: each margin head's logits against its paper's formula on hand-made vectors,
margin only on the target logit and only in training with labels, SphereFace's annealing, parameter
checks by config key, and every head= option training through the real LightningModule."""

from __future__ import annotations

import io
import math

import hydra
import pytest
import torch
import torch.nn.functional as F

from lmguide.models.heads import (
    ARCFACE_EDGES,
    ArcFaceHead,
    CosFaceHead,
    LSoftmaxHead,
    SoftmaxHead,
    SphereFaceHead,
    multiplicative_psi,
)

from .conftest import compose_cfg

# angles between the feature and the target weight, up to just below π (θ + 0.5 > π from 2.64 on)
THETAS = [0.05, 0.4, math.pi / 4, 1.2, 1.5, 1.65, 2.0, 2.6, 2.7, 2.95, 3.1]
MARGIN_HEADS = {
    "arcface": lambda d: ArcFaceHead(d),
    "cosface": lambda d: CosFaceHead(d),
    "sphereface": lambda d: SphereFaceHead(d),
    "lsoftmax": lambda d: LSoftmaxHead(d),
}
ALL_HEADS = {"softmax": lambda d: SoftmaxHead(d), **MARGIN_HEADS}


def psi_reference(theta: float, m: int) -> float:
    """(−1)^k cos(mθ) − 2k on [kπ/m, (k+1)π/m], straight from the L-Softmax / SphereFace papers."""
    k = min(int(theta * m / math.pi), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


def set_weight(head: torch.nn.Module, rows: list[list[float]]) -> None:
    with torch.no_grad():
        head.weight.copy_(torch.tensor(rows))


def planar(thetas: list[float], radius: float = 1.0) -> torch.Tensor:
    """Features at angle θ from (1, 0, 0) in the first two coordinates."""
    return torch.tensor([[radius * math.cos(t), radius * math.sin(t), 0.0] for t in thetas])


# -- ArcFace -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edge", ARCFACE_EDGES)
def test_arcface_logits_follow_the_paper_and_the_edge_rule(edge):
    s, m = 10.0, 0.5
    head = ArcFaceHead(3, s=s, m=m, edge=edge).train()
    set_weight(head, [[2.0, 0.0, 0.0], [0.6, 0.0, 0.8]])  # norms are ignored: only directions count
    logits = head(planar(THETAS, radius=0.7), torch.zeros(len(THETAS), dtype=torch.long))
    for row, theta in zip(logits.tolist(), THETAS, strict=True):
        if (
            edge == "none"
            or (edge == "threshold" and theta + m <= math.pi)
            or (edge == "easy" and theta < math.pi / 2)
        ):
            target = math.cos(theta + m)
        elif edge == "threshold":  # θ + m > π: the CosFace-like fallback
            target = math.cos(theta) - m * math.sin(m)
        else:  # easy, θ ≥ π/2: no margin
            target = math.cos(theta)
        assert row[0] == pytest.approx(s * target, abs=1e-4), theta
        assert row[1] == pytest.approx(s * 0.6 * math.cos(theta), abs=1e-4)  # non-target: s·cos θ_j


def test_arcface_default_edge_is_the_threshold_rule():
    assert ArcFaceHead(4).edge == "threshold"
    with pytest.raises(ValueError, match=r"head\.edge"):
        ArcFaceHead(4, edge="clip")


def test_arcface_edge_rules_monotonicity_over_zero_to_pi():
    thetas = torch.linspace(0, math.pi, 4001, dtype=torch.float64)
    cos = torch.cos(thetas)
    steps = {e: ArcFaceHead(2, m=0.5, edge=e).target_cosine(cos).diff() for e in ARCFACE_EDGES}
    assert (steps["threshold"] <= 1e-12).all()  # the default stays monotonically decreasing
    assert steps["none"].max() > 0  # cos(θ + m) turns back up past π − m
    assert steps["easy"].max() > 0  # jumps back to cos θ at π/2
    widest = ArcFaceHead(2, m=math.pi / 2)  # the largest m allowed: still monotonic
    assert (widest.target_cosine(cos).diff() <= 1e-12).all()


# -- CosFace -------------------------------------------------------------------------------------------
def test_cosface_logits_follow_the_paper():
    s, m = 8.0, 0.35
    head = CosFaceHead(3, s=s, m=m).train()
    set_weight(head, [[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    feats = torch.tensor([[math.cos(t), 0.0, math.sin(t)] for t in THETAS]) * 2.0
    labels = torch.ones(len(THETAS), dtype=torch.long)  # the target is class 1 this time
    logits = head(feats, labels)
    for row, theta in zip(logits.tolist(), THETAS, strict=True):
        assert row[1] == pytest.approx(s * (math.cos(theta) - m), abs=1e-4)
        assert row[0] == pytest.approx(s * math.sin(theta), abs=1e-4)


# -- ψ, SphereFace, L-Softmax ----------------------------------------------------------------------------
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_psi_is_the_papers_piecewise_function_and_decreases_on_zero_to_pi(m):
    thetas = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    psi = multiplicative_psi(torch.cos(thetas), m)
    expected = torch.tensor([psi_reference(t, m) for t in thetas.tolist()], dtype=torch.float64)
    torch.testing.assert_close(psi, expected, atol=1e-9, rtol=0)
    assert (psi.diff() <= 1e-12).all() and psi.diff().sum() < 0
    assert psi[0].item() == pytest.approx(1.0) and psi[-1].item() == pytest.approx(1.0 - 2 * m)
    assert (psi <= torch.cos(thetas) + 1e-12).all()  # never above plain cos θ: the margin only penalises


def reference_logits(feats, weight, labels, *, m, feature_scale, lam, normalise_weight):
    """‖W_j‖‖x‖·cos θ_j, with (λ cos θ_y + ψ(θ_y)) / (1 + λ) in place of cos θ_y (‖W_j‖ = 1 for A-Softmax)."""
    out = []
    for x, y in zip(feats.tolist(), labels.tolist(), strict=True):
        x = [feature_scale * v for v in x]
        x_norm = math.sqrt(sum(v * v for v in x))
        row = []
        for j, w in enumerate(weight):
            w_norm = 1.0 if normalise_weight else math.sqrt(sum(v * v for v in w))
            cos = sum(a * b for a, b in zip(x, w, strict=True)) / (x_norm * math.sqrt(sum(v * v for v in w)))
            if j == y:
                row.append(w_norm * x_norm * (lam * cos + psi_reference(math.acos(cos), m)) / (1 + lam))
            else:
                row.append(w_norm * x_norm * cos)
        out.append(row)
    return torch.tensor(out)


WEIGHT = [[2.0, 0.0, 0.0], [0.0, 0.3, 0.4]]  # norms 2 and 0.5


@pytest.mark.parametrize("lam", [0.0, 3.0])
@pytest.mark.parametrize(
    "cls,m", [(SphereFaceHead, 4), (SphereFaceHead, 3), (LSoftmaxHead, 2), (LSoftmaxHead, 4)]
)
def test_multiplicative_heads_follow_the_paper(cls, m, lam):
    """λ = 0 (base = lambda_min = 0): the papers' formula; λ = 3: the annealed mix of the Caffe layer."""
    head = cls(3, m=m, feature_scale=3.0, base=0.0, lambda_min=lam).train()
    set_weight(head, WEIGHT)
    feats = planar(THETAS, radius=0.5)  # ‖x‖ = 0.5 · 3
    labels = torch.tensor([i % 2 for i in range(len(THETAS))])
    expected = reference_logits(
        feats, WEIGHT, labels, m=m, feature_scale=3.0, lam=lam, normalise_weight=cls is SphereFaceHead
    )
    torch.testing.assert_close(head(feats, labels), expected, atol=1e-4, rtol=1e-4)


def test_lsoftmax_target_is_weight_norm_times_feature_norm_times_psi():
    head = LSoftmaxHead(3, m=2, feature_scale=1.0, base=0.0, lambda_min=0.0).train()
    set_weight(head, WEIGHT)
    feats = planar(THETAS, radius=1.5)
    logits = head(feats, torch.zeros(len(THETAS), dtype=torch.long))
    for row, x, theta in zip(logits.tolist(), feats, THETAS, strict=True):
        assert row[0] == pytest.approx(2.0 * 1.5 * psi_reference(theta, 2), abs=1e-4)
        assert row[1] == pytest.approx(float(torch.tensor(WEIGHT[1]) @ x), abs=1e-5)  # W_j·x


def test_sphereface_lambda_anneals_with_a_checkpointed_iteration_counter():
    head = SphereFaceHead(3)  # the Caffe SphereFace-20 schedule: max(5, 1000 (1 + 0.12 t)^-1)
    assert (head.base, head.gamma, head.power, head.lambda_min, head.m) == (1000, 0.12, 1, 5, 4)
    ts = [0, 1, 10, 100, 1000, 1658, 1659, 10_000]
    lams = [head.annealing_lambda(t).item() for t in ts]
    assert lams == pytest.approx([max(5.0, 1000.0 / (1 + 0.12 * t)) for t in ts], rel=1e-6)
    assert all(a >= b for a, b in zip(lams, lams[1:], strict=False)) and lams[-1] == 5.0

    set_weight(head, WEIGHT)
    feats, labels = planar([0.3, 2.0]), torch.tensor([0, 1])
    assert head.iteration.item() == 0
    head.train()
    first = head(feats, labels)  # the counter advances before λ is read, as in the Caffe layer
    assert head.iteration.item() == 1
    lam1 = 1000.0 / 1.12
    expected = reference_logits(
        feats, WEIGHT, labels, m=4, feature_scale=16.0, lam=lam1, normalise_weight=True
    )
    torch.testing.assert_close(first, expected, atol=1e-4, rtol=1e-4)
    head(feats)  # no labels: no margin, no count
    head.eval()
    head(feats, labels)  # eval: no margin, no count
    assert head.iteration.item() == 1
    head.train()
    for _ in range(4):
        head(feats, labels)
    assert head.iteration.item() == 5

    buf = io.BytesIO()
    torch.save(head.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["iteration"].item() == 5
    resumed = SphereFaceHead(3)
    resumed.load_state_dict(state)
    assert resumed.iteration.item() == 5
    assert resumed.annealing_lambda().item() == pytest.approx(1000.0 / (1 + 0.12 * 5))


# -- shared behaviour --------------------------------------------------------------------------------
def margin_free(head, feats):
    """The evaluation logits written out: s·cos θ (ArcFace, CosFace), ‖x‖cos θ (A-Softmax), W·x."""
    if isinstance(head, SoftmaxHead):
        return head.fc(feats * head.scale)
    if isinstance(head, (ArcFaceHead, CosFaceHead)):
        return head.s * F.normalize(feats, dim=-1) @ F.normalize(head.weight, dim=-1).T
    x = feats * head.feature_scale
    w = F.normalize(head.weight, dim=-1) if isinstance(head, SphereFaceHead) else head.weight
    return x @ w.T


@pytest.mark.parametrize("name", list(ALL_HEADS))
def test_no_margin_without_labels_or_in_eval_and_only_on_the_target_logit(name):
    torch.manual_seed(0)
    head = ALL_HEADS[name](16)
    feats = F.normalize(torch.randn(8, 16), dim=-1)  # unit features, as the attention modules give
    labels = torch.tensor([0, 1] * 4)
    plain = margin_free(head, feats).detach()
    with torch.no_grad():
        head.train()
        no_labels = head(feats)
        trained = head(feats, labels)
        head.eval()
        evaluated = head(feats, labels)
    torch.testing.assert_close(no_labels, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(evaluated, plain, atol=1e-5, rtol=1e-5)
    target = F.one_hot(labels, 2).bool()
    torch.testing.assert_close(trained[~target], plain[~target], atol=1e-5, rtol=1e-5)
    if name == "softmax":
        torch.testing.assert_close(trained, plain)
    else:
        assert (trained[target] < plain[target] - 1e-4).all()  # every margin lowers the true-class logit


@pytest.mark.parametrize("cls", [ArcFaceHead, CosFaceHead])
def test_normalised_heads_score_softmax_of_s_cos_at_evaluation(cls):
    head = cls(3, s=12.0).eval()
    set_weight(head, [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])  # antipodal real / fake weights
    feats = planar([0.2, 1.4, math.pi / 2, 2.5])
    p_fake = head(feats).softmax(-1)[:, 1]
    cos = torch.cos(torch.tensor([0.2, 1.4, math.pi / 2, 2.5]))
    torch.testing.assert_close(p_fake, torch.sigmoid(12.0 * (-cos - cos)), atol=1e-5, rtol=1e-5)
    assert p_fake[2].item() == pytest.approx(0.5, abs=1e-5)  # on the boundary: undecided, no margin


@pytest.mark.parametrize("name", list(ALL_HEADS))
def test_gradients_flow_to_features_and_weights_even_on_the_weight_axis(name):
    torch.manual_seed(1)
    head = ALL_HEADS[name](8).train()
    weight = head.fc.weight if name == "softmax" else head.weight
    with torch.no_grad():  # two samples exactly on a class axis (θ = 0 and θ = π), the worst case
        axis = F.normalize(weight[0], dim=0)
        feats = torch.cat([axis[None], -axis[None], F.normalize(torch.randn(4, 8), dim=-1)])
    feats.requires_grad_(True)
    labels = torch.tensor([0, 0, 0, 1, 0, 1])
    F.cross_entropy(head(feats, labels), labels).backward()
    for grad in (feats.grad, weight.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(
    "cls,kwargs,key",
    [
        (ArcFaceHead, {"s": 0.0}, "head.s"),
        (ArcFaceHead, {"s": float("nan")}, "head.s"),
        (ArcFaceHead, {"m": -0.1}, "head.m"),
        (ArcFaceHead, {"m": 2.0}, "head.m"),
        (ArcFaceHead, {"num_classes": 1}, "head.num_classes"),
        (CosFaceHead, {"s": -16.0}, "head.s"),
        (CosFaceHead, {"m": 2.0}, "head.m"),
        (CosFaceHead, {"m": -0.2}, "head.m"),
        (CosFaceHead, {"dropout": 1.0}, "head.dropout"),
        (SphereFaceHead, {"m": 0}, "head.m"),
        (SphereFaceHead, {"m": 2.5}, "head.m"),
        (SphereFaceHead, {"m": True}, "head.m"),
        (SphereFaceHead, {"feature_scale": 0.0}, "head.feature_scale"),
        (SphereFaceHead, {"lambda_min": -1.0}, "head.lambda_min"),
        (SphereFaceHead, {"gamma": -0.1}, "head.gamma"),
        (SphereFaceHead, {"base": float("inf")}, "head.base"),
        (LSoftmaxHead, {"m": 0}, "head.m"),
        (LSoftmaxHead, {"m": 1.5}, "head.m"),
        (LSoftmaxHead, {"power": -1.0}, "head.power"),
    ],
)
def test_bad_values_are_refused_by_config_key(cls, kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        cls(8, **kwargs)


def test_integer_margins_from_floats_and_m_one_is_allowed():
    assert SphereFaceHead(4, m=4.0).m == 4 and LSoftmaxHead(4, m=1).m == 1
    head = SphereFaceHead(4, m=1, base=0.0, lambda_min=0.0).train()  # ψ = cos θ: no margin at m = 1
    feats, labels = F.normalize(torch.randn(3, 4), dim=-1), torch.tensor([0, 1, 1])
    torch.testing.assert_close(head(feats, labels), head(feats))


# -- configs through the real model ----------------------------------------------------------------------
HEAD_CLASSES = {
    "softmax": SoftmaxHead,
    "arcface": ArcFaceHead,
    "cosface": CosFaceHead,
    "sphereface": SphereFaceHead,
    "lsoftmax": LSoftmaxHead,
}


@pytest.mark.parametrize("name", list(HEAD_CLASSES))
def test_each_head_config_composes_and_trains_one_step(name, tmp_path):
    from lmguide.bench.train_step import _batch

    torch.manual_seed(0)
    overrides = [f"head={name}", "data.image_size=64", "attention.num_maps=2"]
    cfg = compose_cfg(overrides, tmp_path)
    assert cfg.head.num_classes == 2 and cfg.head._partial_
    model = hydra.utils.instantiate(cfg.model)
    assert type(model.head) is HEAD_CLASSES[name]
    model.log = lambda *a, **k: None  # no trainer attached
    model.train()
    batch = _batch(2, 64, torch.device("cpu"))  # one real, one fake
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    params = list(model.head.parameters())
    assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert any(p.grad.abs().sum() > 0 for p in params)
    if name == "sphereface":  # raw batch + the WS-DAN crop/drop batch: two margin-on passes per step
        assert model.state_dict()["head.iteration"].item() == 2
    model.eval()
    with torch.no_grad():
        prob = model(batch["image"]).logits.softmax(-1)[:, 1]
    assert ((prob >= 0) & (prob <= 1)).all()


def test_head_config_defaults(tmp_path):
    def head_cfg(name):
        return compose_cfg([f"head={name}"], tmp_path).head

    arc, cos, sphere, lsm = (head_cfg(n) for n in ("arcface", "cosface", "sphereface", "lsoftmax"))
    assert (arc.s, arc.m, arc.edge) == (16.0, 0.3, "threshold")
    assert (cos.s, cos.m) == (16.0, 0.3)
    assert (sphere.m, sphere.base, sphere.gamma, sphere.power, sphere.lambda_min) == (4, 1000, 0.12, 1, 5)
    assert (lsm.m, lsm.feature_scale) == (2, 16.0)
    # the config values reach the classes unchanged (no key a class does not take)
    for c in (arc, cos, sphere, lsm):
        head = hydra.utils.instantiate(c)(in_features=8)
        for key, value in c.items():
            if not key.startswith("_") and key not in ("num_classes", "dropout"):
                assert getattr(head, key) == value, key


def test_bad_head_override_is_refused_by_name(tmp_path):
    cfg = compose_cfg(["head=sphereface", "head.m=2.5"], tmp_path)
    with pytest.raises(ValueError, match=r"head\.m"):
        hydra.utils.instantiate(cfg.head)(in_features=8)
