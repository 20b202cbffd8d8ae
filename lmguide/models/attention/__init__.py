"""Attention modules. Each takes ``channels`` first and maps a feature map (B, C, h, w) to
``(features (B, D), attention_maps (B, M, h, w))``; the landmark loss and the overlays consume the maps.

``ATTENTION`` maps each config option (``conf/attention/<name>.yaml``) to its class. Modules that read
the backbone's internals (``vit_cls``) also have ``bind(backbone)``, which the LightningModule calls.
"""

from lmguide.models.attention.cbam import CBAMAttention
from lmguide.models.attention.multi import MultiAttention
from lmguide.models.attention.non_local import NonLocalAttention
from lmguide.models.attention.none import NoAttention
from lmguide.models.attention.se import SEAttention
from lmguide.models.attention.vit_cls import ViTClsAttention

ATTENTION = {
    "multi": MultiAttention,
    "cbam": CBAMAttention,
    "se": SEAttention,
    "nonlocal": NonLocalAttention,
    "vit_cls": ViTClsAttention,
    "none": NoAttention,
}

__all__ = [
    "ATTENTION",
    "CBAMAttention",
    "MultiAttention",
    "NoAttention",
    "NonLocalAttention",
    "SEAttention",
    "ViTClsAttention",
]
