"""No attention: the plain backbone, the baseline of the ablations (guidance weight λ = 0)."""

from __future__ import annotations

import torch
from torch import nn

from lmguide.models.attention.common import energy_map, pooled_unit_features
from lmguide.runs.errors import require_number


class NoAttention(nn.Module):
    """Passes the backbone's feature map through unchanged; it has no parameters.

    ``maps`` (B, 1, h, w) >= 0, summing to 1 over the h·w positions of each sample: the feature energy
    ``mean_c(x_c²)`` of the backbone's map, normalised per sample. Nothing here is learnable, so a
    landmark loss (λ > 0) acts on the backbone's own energy; the map also keeps the WS-DAN views and the
    ``attn_in_lm`` metric defined for the baseline. ``features`` (B, C): global average pool,
    L2-normalised.

    Args:
        channels: C of the feature map (the module passes ``backbone.out_channels``).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = require_number("attention.channels", channels, low=1, integer=True)

    @property
    def out_features(self) -> int:
        return self.channels

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pooled_unit_features(fmap), energy_map(fmap)
