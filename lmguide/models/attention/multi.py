"""Multi-attention maps with bilinear attention pooling.

WS-DAN (Hu et al., "See Better Before Looking Closer", 2019) and MAT (Zhao et al., "Multi-attentional
Deepfake Detection", CVPR 2021): M non-negative maps from a 1x1 convolution on a mid-level feature
map; each map pools the features (bilinear attention pooling, BAP), giving one part feature per map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmguide.runs.errors import require_number


class MultiAttention(nn.Module):
    """``maps`` (B, M, h, w) >= 0: where each of the M parts looks. ``features`` (B, M*C): the BAP
    part features, signed-sqrt and L2-normalised as in WS-DAN."""

    def __init__(self, channels: int, num_maps: int = 4):
        super().__init__()
        self.num_maps = require_number("attention.num_maps", num_maps, low=1, integer=True)
        self.channels = channels
        self.conv = nn.Sequential(
            nn.Conv2d(channels, num_maps, 1, bias=False), nn.BatchNorm2d(num_maps), nn.ReLU(inplace=True)
        )

    @property
    def out_features(self) -> int:
        return self.num_maps * self.channels

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = fmap.shape
        maps = self.conv(fmap)  # (B, M, h, w)
        feats = torch.einsum("bmhw,bchw->bmc", maps, fmap) / (h * w)  # (B, M, C)
        feats = torch.sign(feats) * torch.sqrt(feats.abs() + 1e-12)
        feats = F.normalize(feats.reshape(b, -1), dim=-1)  # (B, M*C)
        return feats, maps
