"""Classification heads: part features (B, D) -> logits (B, C) (C = 2: real, fake).

``head(feats, labels)`` is called with the labels in training steps and with ``labels=None`` in
validation, test and prediction. The margin heads change the logit of the *target* class only, and
only while the module is in training mode *and* labels are given; otherwise every head returns its
margin-free logits, whose softmax is the calibrated P(fake) the metrics and ``predict`` read.

The attention modules hand over L2-normalised features (‖f‖ = 1). Heads whose logits grow with ‖f‖
(SoftmaxHead, SphereFaceHead, LSoftmaxHead) therefore take a scale (``scale`` / ``feature_scale``)
that sets ‖x‖; the normalised heads (ArcFace, CosFace) ignore ‖f‖ and use their own ``s``.

==============  ===========================================  ==========================================
head            target-class logit in training               every other logit (and all at evaluation)
==============  ===========================================  ==========================================
SoftmaxHead     W_y·x + b_y                                  W_j·x + b_j
ArcFaceHead     s·cos(θ_y + m)                               s·cos θ_j
CosFaceHead     s·(cos θ_y − m)                              s·cos θ_j
SphereFaceHead  ‖x‖·(λ·cos θ_y + ψ(θ_y)) / (1 + λ)           ‖x‖·cos θ_j              (‖W_j‖ = 1)
LSoftmaxHead    ‖W_y‖‖x‖·(λ·cos θ_y + ψ(θ_y)) / (1 + λ)      ‖W_j‖‖x‖·cos θ_j = W_j·x
==============  ===========================================  ==========================================

θ_j is the angle between the feature x and the class weight W_j. ψ is the multiplicative angular
margin of L-Softmax / A-Softmax, extended to [0, π] so that it decreases monotonically:
ψ(θ) = (−1)^k·cos(mθ) − 2k for θ in [kπ/m, (k+1)π/m], k = 0 … m−1. λ anneals the multiplicative
margin in from plain softmax (λ → ∞) and is 0 for the exact paper formula.

References: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019;
Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018;
Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017;
Liu et al., "Large-Margin Softmax Loss for Convolutional Neural Networks", ICML 2016.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmguide.runs.errors import require_number

ARCFACE_EDGES = ("threshold", "easy", "none")


def _target_mask(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Boolean (B, C), True at each sample's label column."""
    return F.one_hot(labels.long(), logits.shape[-1]).bool()


def _cosine(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """cos θ between each row of ``x`` (B, D) and each class weight (C, D) -> (B, C), in float32 and
    outside autocast (the margins act on differences of a few hundredths), clamped to [-1, 1]."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        cos = F.linear(F.normalize(x.float(), dim=-1), F.normalize(weight.float(), dim=-1))
    return cos.clamp(-1.0, 1.0)


class SoftmaxHead(nn.Module):
    """Linear layer + softmax cross-entropy. ``scale`` multiplies the L2-normalised features first so
    logits start in a useful range (WS-DAN uses 100 with pretrained backbones)."""

    def __init__(self, in_features: int, num_classes: int = 2, scale: float = 16.0, dropout: float = 0.0):
        super().__init__()
        self.scale = scale
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, feats: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.drop(feats * self.scale))


class _MarginHead(nn.Module):
    """Shared pieces: class weights (C, D) without bias, dropout and the "is the margin on" rule."""

    #: training logits depend on the labels (the margin): the module scores train/acc without them
    uses_labels = True

    def __init__(self, in_features: int, num_classes: int, dropout: float):
        super().__init__()
        self.in_features = require_number("head.in_features", in_features, low=1, integer=True)
        self.num_classes = require_number("head.num_classes", num_classes, low=2, integer=True)
        self.drop = nn.Dropout(require_number("head.dropout", dropout, low=0, high=1, high_open=True))
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.in_features))

    def margin_on(self, labels: torch.Tensor | None) -> bool:
        """The margin applies in training mode with labels; evaluation always gets plain logits."""
        return self.training and labels is not None


class _NormalisedMarginHead(_MarginHead):
    """Logits ``s·cos θ_j`` (features and weights L2-normalised); subclasses replace the target's
    ``cos θ_y`` by a margin function of it while training."""

    def __init__(self, in_features: int, num_classes: int, s: float, m: float, dropout: float):
        super().__init__(in_features, num_classes, dropout)
        self.s = require_number("head.s", s, low=0, low_open=True, example=16)
        self.m = float(m)
        nn.init.xavier_uniform_(self.weight)  # only the directions matter

    def target_cosine(self, cos: torch.Tensor) -> torch.Tensor:
        """The margin-penalised cosine of the target class (elementwise on ``cos``)."""
        raise NotImplementedError

    def forward(self, feats: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = _cosine(self.drop(feats), self.weight)
        if labels is not None and self.margin_on(labels):
            cos = torch.where(_target_mask(labels, cos), self.target_cosine(cos), cos)
        return self.s * cos

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, s={self.s}, m={self.m}"


class ArcFaceHead(_NormalisedMarginHead):
    """ArcFace: additive angular margin, target logit ``s·cos(θ_y + m)``, others ``s·cos θ_j``.

    Past θ_y = π − m, cos(θ_y + m) turns back up (θ_y + m > π), so a sample pushed further from its
    class would get a *larger* target logit. ``edge`` picks what happens there:

    * ``"threshold"`` (default): for θ_y > π − m use ``cos θ_y − m·sin m`` instead, a CosFace-like
      penalty. The target logit then decreases monotonically over all of [0, π] (it steps down at
      π − m, since cos m + m·sin m ≥ 1 for m ≤ π/2).
    * ``"easy"``: apply the margin only where cos θ_y > 0 (θ_y < π/2) and leave ``cos θ_y`` unchanged
      beyond; samples on the wrong side of the orthogonal get no margin at all.
    * ``"none"``: ``cos(θ_y + m)`` everywhere (not monotonic beyond π − m).

    Args:
        in_features: D of the features (the module passes it).
        num_classes: C (2: real, fake).
        s: the scale of the cosine logits, at training and evaluation (P(fake) = softmax(s·cos θ)).
        m: the angular margin in radians, in [0, π/2].
        edge: ``"threshold"`` | ``"easy"`` | ``"none"``, see above.
        dropout: on the features before normalisation.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 2,
        s: float = 16.0,
        m: float = 0.3,
        edge: str = "threshold",
        dropout: float = 0.0,
    ):
        require_number("head.m", m, low=0, high=math.pi / 2, example=0.3)  # radians
        if edge not in ARCFACE_EDGES:
            raise ValueError(f"head.edge must be one of {', '.join(ARCFACE_EDGES)}, got {edge!r}")
        super().__init__(in_features, num_classes, s, m, dropout)
        self.edge = edge
        self.cos_m, self.sin_m = math.cos(self.m), math.sin(self.m)
        self.cos_limit = math.cos(math.pi - self.m)  # cos θ below this: θ + m > π

    def target_cosine(self, cos: torch.Tensor) -> torch.Tensor:
        # cos(θ + m) = cos θ·cos m − sin θ·sin m; sin θ floored so the gradient stays finite at θ = 0, π
        sin = (1.0 - cos * cos).clamp_min(1e-6).sqrt()
        shifted = cos * self.cos_m - sin * self.sin_m
        if self.edge == "threshold":
            return torch.where(cos > self.cos_limit, shifted, cos - self.m * self.sin_m)
        if self.edge == "easy":
            return torch.where(cos > 0, shifted, cos)
        return shifted

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, edge={self.edge!r}"


class CosFaceHead(_NormalisedMarginHead):
    """CosFace (large margin cosine loss): target logit ``s·(cos θ_y − m)``, others ``s·cos θ_j``.

    Args:
        in_features: D of the features (the module passes it).
        num_classes: C (2: real, fake).
        s: the scale of the cosine logits, at training and evaluation (P(fake) = softmax(s·cos θ)).
        m: the cosine margin, in [0, C/(C−1)) (the paper's bound; 2 for two classes, where m ≥ 2
            could never be met).
        dropout: on the features before normalisation.
    """

    def __init__(
        self, in_features: int, num_classes: int = 2, s: float = 16.0, m: float = 0.3, dropout: float = 0.0
    ):
        c = require_number("head.num_classes", num_classes, low=2, integer=True)
        require_number("head.m", m, low=0, high=c / (c - 1), high_open=True, example=0.3)
        super().__init__(in_features, num_classes, s, m, dropout)

    def target_cosine(self, cos: torch.Tensor) -> torch.Tensor:
        return cos - self.m


def multiplicative_psi(cos: torch.Tensor, m: int) -> torch.Tensor:
    """ψ(θ) = (−1)^k·cos(mθ) − 2k, θ in [kπ/m, (k+1)π/m], as a function of cos θ.

    cos(mθ) is the Chebyshev polynomial T_m(cos θ), so the gradient never goes through arccos (whose
    derivative is infinite at θ = 0, π); k only picks the branch and carries no gradient. ψ runs
    continuously and monotonically from ψ(0) = 1 down to ψ(π) = 1 − 2m.
    """
    cos = cos.clamp(-1.0, 1.0)
    t_prev, t = torch.ones_like(cos), cos  # T_0, T_1
    for _ in range(m - 1):
        t_prev, t = t, 2 * cos * t - t_prev
    with torch.no_grad():
        k = torch.floor(torch.acos(cos) * (m / math.pi)).clamp(0, m - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * t - 2.0 * k


class _MultiplicativeMarginHead(_MarginHead):
    """L-Softmax / A-Softmax: target logit ``‖W_y‖‖x‖·(λ·cos θ_y + ψ(θ_y)) / (1 + λ)``.

    ``x = feature_scale · f``. λ = max(lambda_min, base·(1 + gamma·t)^(−power)) with t the number of
    margin-on forward passes so far (``iteration``, a buffer: saved in checkpoints, restored on
    resume). As in the authors' Caffe layer, the counter is advanced before λ is computed, so the
    first training pass uses t = 1. ``base = lambda_min = 0`` gives λ = 0, the plain paper formula.
    The two heads differ only in ``normalise_weight`` and their default ``m``; the annealing defaults
    are those of the authors' SphereFace-20 Caffe model.
    """

    normalise_weight: bool
    default_m: int

    def __init__(
        self,
        in_features: int,
        num_classes: int = 2,
        m: int | None = None,
        feature_scale: float = 16.0,
        base: float = 1000.0,
        gamma: float = 0.12,
        power: float = 1.0,
        lambda_min: float = 5.0,
        dropout: float = 0.0,
    ):
        super().__init__(in_features, num_classes, dropout)
        self.m = require_number("head.m", self.default_m if m is None else m, low=1, integer=True)
        self.feature_scale = require_number("head.feature_scale", feature_scale, low=0, low_open=True)
        self.base = require_number("head.base", base, low=0)
        self.gamma = require_number("head.gamma", gamma, low=0)
        self.power = require_number("head.power", power, low=0)
        self.lambda_min = require_number("head.lambda_min", lambda_min, low=0)
        self.iteration: torch.Tensor  # margin steps taken, a buffer
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default

    def annealing_lambda(self, iteration: int | torch.Tensor | None = None) -> torch.Tensor:
        """λ at ``iteration`` (default: the current counter), a float32 scalar tensor."""
        t = self.iteration if iteration is None else torch.as_tensor(iteration)
        t = t.to(device=self.iteration.device, dtype=torch.float32)
        return (self.base * (1.0 + self.gamma * t) ** (-self.power)).clamp_min(self.lambda_min)

    def forward(self, feats: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.drop(feats) * self.feature_scale
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, w = x.float(), self.weight.float()
            if self.normalise_weight:
                w = F.normalize(w, dim=-1)
            plain = F.linear(x, w)  # ‖W_j‖‖x‖·cos θ_j
            if labels is None or not self.margin_on(labels):
                return plain
            with torch.no_grad():
                self.iteration += 1
            lam = self.annealing_lambda()
            norms = x.norm(dim=-1, keepdim=True) * w.norm(dim=-1)  # ‖x‖‖W_j‖, (B, C)
            cos = (plain / norms.clamp_min(1e-12)).clamp(-1.0, 1.0)
            margin = norms * (lam * cos + multiplicative_psi(cos, self.m)) / (1.0 + lam)
            return torch.where(_target_mask(labels, plain), margin, plain)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, m={self.m}, "
            f"feature_scale={self.feature_scale}, lambda=max({self.lambda_min:g}, "
            f"{self.base:g}·(1+{self.gamma:g}·t)^-{self.power:g})"
        )


class SphereFaceHead(_MultiplicativeMarginHead):
    """SphereFace (A-Softmax): class weights normalised (‖W_j‖ = 1, no bias), multiplicative angular
    margin: target logit ``‖x‖·(λ·cos θ_y + ψ(θ_y)) / (1 + λ)``, others ``‖x‖·cos θ_j``.

    At evaluation the logits are ``‖x‖·cos θ_j``; with the unit features of the attention modules
    ‖x‖ = ``feature_scale``, so P(fake) = softmax(feature_scale·cos θ) like a normalised head.

    Args:
        in_features: D of the features (the module passes it).
        num_classes: C (2: real, fake).
        m: the integer angular margin (≥ 1; 1 is plain normalised-weight softmax; default 4, the paper's).
        feature_scale: multiplies the features, i.e. ‖x‖ for unit features.
        base, gamma, power, lambda_min: the annealing of λ (see the class above); the defaults are
            those of the authors' SphereFace-20 Caffe model.
        dropout: on the features.
    """

    normalise_weight = True
    default_m = 4


class LSoftmaxHead(_MultiplicativeMarginHead):
    """L-Softmax: no weight normalisation and no bias; target logit
    ``‖W_y‖‖x‖·(λ·cos θ_y + ψ(θ_y)) / (1 + λ)``, others ``‖W_j‖‖x‖·cos θ_j = W_j·x``.

    At evaluation the logits are ``W_j·x`` (a bias-free linear layer on ``feature_scale · f``).

    Args:
        in_features: D of the features (the module passes it).
        num_classes: C (2: real, fake).
        m: the integer angular margin (≥ 1; 1 is a plain bias-free linear softmax; default 2).
        feature_scale: multiplies the features, i.e. ‖x‖ for unit features (like SoftmaxHead's scale).
        base, gamma, power, lambda_min: the annealing of λ (see the class above).
        dropout: on the features.
    """

    normalise_weight = False
    default_m = 2
