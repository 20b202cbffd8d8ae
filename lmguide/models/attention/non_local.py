"""Non-local block: self-attention over the positions of the feature map, with a residual.

Non-local neural networks (Wang et al., CVPR 2018), embedded-Gaussian form: queries θ(x), keys φ(x)
and values g(x) are 1x1 convolutions to ``C // reduction`` channels; every position takes the
softmax-weighted sum of the values, ``y = softmax(θᵀφ) g``, which a 1x1 convolution and BatchNorm map
back to C channels and add to the input, ``z = x + BN(W y)``. The logits are scaled by ``1/√d``
(d = the embedding width) as in Transformer self-attention; the paper leaves them unscaled, which
saturates the softmax for wide embeddings. The file is ``non_local.py`` because ``nonlocal`` is a
Python keyword; the config option is ``attention=nonlocal``.
"""

from __future__ import annotations

import torch
from torch import nn

from lmguide.models.attention.common import pooled_unit_features
from lmguide.runs.errors import require_number


class NonLocalAttention(nn.Module):
    """Embedded-Gaussian non-local block on the backbone's feature map.

    ``maps`` (B, 1, h, w) >= 0, summing to 1 over the h·w positions of each sample: the attention each
    position *receives*, the mean over all query positions of their softmax rows (the column mean of the
    N x N attention matrix, N = h·w). A position many others attend to scores high. ``features``
    (B, C): global average pool of the block output ``z``, L2-normalised.

    Args:
        channels: C of the feature map (the module passes ``backbone.out_channels``).
        reduction: embedding width ``d = max(C // reduction, 1)`` (2 in the paper).
        zero_init: start the output BatchNorm's scale at zero, so the block is the identity at the start
            of training (the paper's initialisation). In the very first step the value projection g and
            the output projection W then get no gradient (only the BatchNorm scale and shift do); θ and
            φ are reached through the map, i.e. by the landmark loss.
    """

    def __init__(self, channels: int, reduction: int = 2, zero_init: bool = True):
        super().__init__()
        self.channels = require_number("attention.channels", channels, low=1, integer=True)
        self.reduction = require_number("attention.reduction", reduction, low=1, integer=True)
        if not isinstance(zero_init, bool):
            raise ValueError(f"attention.zero_init must be true or false, got {zero_init!r}")
        self.dim = max(channels // reduction, 1)
        self.theta = nn.Conv2d(channels, self.dim, 1)
        # no key bias: it adds the same q·b to a whole softmax row, which the softmax cancels
        self.phi = nn.Conv2d(channels, self.dim, 1, bias=False)
        self.g = nn.Conv2d(channels, self.dim, 1)
        norm = nn.BatchNorm2d(channels)
        self.out = nn.Sequential(nn.Conv2d(self.dim, channels, 1, bias=False), norm)
        if zero_init:
            nn.init.zeros_(norm.weight)

    @property
    def out_features(self) -> int:
        return self.channels

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = fmap.shape
        q = self.theta(fmap).reshape(b, self.dim, h * w).transpose(1, 2)  # (B, N, d)
        k = self.phi(fmap).reshape(b, self.dim, h * w)  # (B, d, N)
        v = self.g(fmap).reshape(b, self.dim, h * w).transpose(1, 2)  # (B, N, d)
        attn = torch.softmax((q @ k) * self.dim**-0.5, dim=-1)  # (B, N, N), rows (queries) sum to 1
        y = (attn @ v).transpose(1, 2).reshape(b, self.dim, h, w)
        z = fmap + self.out(y)
        maps = attn.mean(1).reshape(b, 1, h, w)  # column mean: attention received per position
        return pooled_unit_features(z), maps
