"""Squeeze-and-excitation: channel attention only.

SE (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018): the globally pooled feature map goes
through a bottleneck MLP and a sigmoid, one gate per channel, which re-weights the channels. SE has no
spatial map of its own, so the map the landmark loss guides is the feature energy of the re-weighted
map (:func:`lmguide.models.attention.common.energy_map`).
"""

from __future__ import annotations

import torch
from torch import nn

from lmguide.models.attention.common import energy_map, pooled_unit_features
from lmguide.runs.errors import require_number


class SEAttention(nn.Module):
    """SE channel gate on the backbone's feature map.

    ``maps`` (B, 1, h, w) >= 0, summing to 1 over the h·w positions of each sample: the energy
    ``mean_c((s_c·x_c)²)`` of the re-weighted map, normalised per sample. The guidance therefore acts on
    which channels the gate keeps (channels that fire on the landmarks gain weight) and, through the
    features, on the backbone. ``features`` (B, C): global average pool of the re-weighted map,
    L2-normalised.

    Args:
        channels: C of the feature map (the module passes ``backbone.out_channels``).
        reduction: the MLP's hidden width is ``max(C // reduction, 1)`` (16 in the paper).
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.channels = require_number("attention.channels", channels, low=1, integer=True)
        self.reduction = require_number("attention.reduction", reduction, low=1, integer=True)
        hidden = max(channels // reduction, 1)
        self.excite = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    @property
    def out_features(self) -> int:
        return self.channels

    def channel_gate(self, fmap: torch.Tensor) -> torch.Tensor:
        """The per-channel gate (B, C, 1, 1) in (0, 1) that re-weights ``fmap`` (drawn by the visualiser)."""
        return self.excite(fmap.mean((2, 3), keepdim=True))

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = fmap * self.channel_gate(fmap)
        return pooled_unit_features(x), energy_map(x)
