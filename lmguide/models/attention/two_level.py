"""Attention on a finer stage than the deepest features, the deepest stage kept for the global view.

MAT (Zhao et al., "Multi-attentional Deepfake Detection", CVPR 2021) takes its attention maps and the
texture features they pool from a shallow layer, and keeps the deep layer's features for the global
view. At the last stage of a CNN the maps are too coarse to tell the eyes from the mouth (stride 32:
4x4 at 128 px); one stage earlier they are 8x8 (stride 16), while the classifier still sees every
pretrained stage through the pooled deepest map.

:class:`TwoLevelAttention` wraps any attention module of :data:`~lmguide.models.attention.ATTENTION`:
the wrapped module runs on the finer map exactly as it would on a one-level backbone (its maps are
what the landmark loss guides and the WS-DAN views cut), and its features are joined with the
global average pool of the deepest map. The LightningModule wraps the attention when the backbone
has ``attn_index`` (:class:`~lmguide.models.backbones.TimmBackbone`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmguide.models.attention.common import pooled_unit_features
from lmguide.runs.errors import require_number


class TwoLevelAttention(nn.Module):
    """``forward((fine (B, C, h, w), deep (B, C', h', w')))`` -> ``(features (B, D + C'), maps (B, M, h, w))``
    (the maps at the fine map's resolution).

    ``features``: the wrapped module's features (unit norm) and the deep map's pooled unit features,
    concatenated and L2-normalised again (each half weighs the same, ``‖f‖ = 1`` as the heads expect).

    Args:
        inner: the attention module, built for the fine map's channels.
        global_channels: C' of the deepest map (the backbone's ``global_channels``).
    """

    def __init__(self, inner: nn.Module, global_channels: int):
        super().__init__()
        if hasattr(inner, "bind"):  # vit_cls: hooks on the out_index block itself
            raise ValueError(
                f"attention={type(inner).__name__} reads the attention of the backbone's out_index block "
                "itself: backbone.attn_index does not apply to it (set it to null)"
            )
        self.inner = inner
        self.global_channels = require_number(
            "backbone.global_channels", global_channels, low=1, integer=True
        )

    @property
    def out_features(self) -> int:
        return self.inner.out_features + self.global_channels

    @property
    def num_maps(self) -> int | None:
        return getattr(self.inner, "num_maps", None)

    def forward(self, levels: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        fine, deep = levels
        feats, maps = self.inner(fine)  # (B, D), (B, M, h, w)
        both = torch.cat([feats, pooled_unit_features(deep).to(feats.dtype)], -1)  # (B, D + C')
        return F.normalize(both, dim=-1), maps


def attention_input(levels: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The map an attention module works on: a one-level backbone's output, or a two-level one's fine map."""
    return levels[0] if isinstance(levels, tuple | list) else levels


def inner_attention(attention: nn.Module) -> nn.Module:
    """The attention module itself, unwrapped from :class:`TwoLevelAttention` when wrapped."""
    return attention.inner if isinstance(attention, TwoLevelAttention) else attention
