"""Convolutional Block Attention Module: channel then spatial ("mixed") attention.

CBAM (Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018). A channel gate from a
shared two-layer MLP applied to the average- and max-pooled feature map (outputs summed, then a
sigmoid) re-weights the channels; a spatial gate from a k x k convolution over the channel-wise mean
and maximum of the re-weighted map (then a sigmoid) re-weights the positions.
"""

from __future__ import annotations

import torch
from torch import nn

from lmguide.models.attention.common import pooled_unit_features
from lmguide.runs.errors import require_number


class CBAMAttention(nn.Module):
    """CBAM on the backbone's feature map.

    ``maps`` (B, 1, h, w) in (0, 1): the spatial gate, i.e. how strongly each position of the
    channel-refined map is kept; this is the map the landmark loss guides and the WS-DAN views use.
    ``features`` (B, C): global average pool of the refined map ``x · M_c · M_s``, L2-normalised.

    Args:
        channels: C of the feature map (the module passes ``backbone.out_channels``).
        reduction: the channel MLP's hidden width is ``max(C // reduction, 1)`` (16 in the paper).
        kernel_size: odd side of the spatial gate's convolution (7 in the paper).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channels = require_number("attention.channels", channels, low=1, integer=True)
        self.reduction = require_number("attention.reduction", reduction, low=1, integer=True)
        self.kernel_size = require_number("attention.kernel_size", kernel_size, low=1, integer=True)
        if kernel_size % 2 == 0:
            raise ValueError(f"attention.kernel_size must be odd (a centred window), got {kernel_size}")
        hidden = max(channels // reduction, 1)
        self.channel_mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        self.spatial_conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    @property
    def out_features(self) -> int:
        return self.channels

    def channel_gate(self, fmap: torch.Tensor) -> torch.Tensor:
        """The channel gate (B, C, 1, 1) in (0, 1), before the spatial gate (drawn by the visualiser)."""
        avg, peak = fmap.mean((2, 3), keepdim=True), fmap.amax((2, 3), keepdim=True)  # (B, C, 1, 1)
        return torch.sigmoid(self.channel_mlp(avg) + self.channel_mlp(peak))

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = fmap * self.channel_gate(fmap)
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)  # (B, 2, h, w)
        maps = torch.sigmoid(self.spatial_conv(pooled))  # (B, 1, h, w)
        return pooled_unit_features(x * maps), maps
