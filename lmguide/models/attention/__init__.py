"""Attention modules. Each takes ``channels`` first and maps a feature map (B, C, h, w) to
``(features (B, D), attention_maps (B, M, h, w))``; the landmark loss and the overlays consume the maps.
"""

from lmguide.models.attention.multi import MultiAttention

ATTENTION = {"multi": MultiAttention}

__all__ = ["ATTENTION", "MultiAttention"]
