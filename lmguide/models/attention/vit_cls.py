"""CLS-token attention of a ViT backbone: the transformer's own attention as the guided map.

Unlike the other modules this one adds no layers: it reads two things out of the ViT block the backbone
stops at (``backbone.out_index``) while the backbone runs, through forward hooks installed by
:meth:`ViTClsAttention.bind`:

* the softmax attention probabilities of the block's self-attention, (B, heads, N, N), taken where they
  enter ``attn.attn_drop`` (so before attention dropout). timm's fused ``scaled_dot_product_attention``
  never materialises them, so ``bind`` puts that one block on timm's unfused path while bound. The
  captured tensor is *not* detached: the landmark loss back-propagates through the softmax into q, k
  and everything below.
* the block's output tokens (B, N, C), whose class token gives the features.

N = prefix tokens (class token, plus any register tokens) + gh·gw patch tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmguide.models.backbones import feature_stage, vit_model
from lmguide.runs.errors import require_number


class ViTClsAttention(nn.Module):
    """Per-head CLS-token attention over the patch grid of the ViT block the backbone stops at.

    ``maps`` (B, heads, gh, gw) >= 0: for each head, the class token's softmax attention to the patch
    tokens. The share it pays to the prefix tokens (itself, registers) is dropped and the rest
    renormalised, so every head's map sums to 1 over the gh·gw patches. Heads are kept separate: the
    ``simple`` and ``ratio`` landmark losses average them, a per-head form can pull head m to region m.
    ``features`` (B, C): the class token of the block's output (before any final LayerNorm, which the
    features-only backbone prunes), L2-normalised.

    Needs :meth:`bind` (the LightningModule calls it with its backbone) before the first forward, and
    the backbone must run just before each call: ``forward`` consumes what the hooks captured during
    that backbone pass. ``fmap`` only supplies the patch grid and checks the batch.

    Args:
        channels: the ViT's embedding width (the module passes ``backbone.out_channels``).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = require_number("attention.channels", channels, low=1, integer=True)
        # plain attributes, not submodules: the backbone is registered by the LightningModule already
        self._bound: tuple[nn.Module, Any] | None = None  # (backbone, hooked timm block)
        self._handles: list = []
        self._prefix = 0
        self._was_fused: bool | None = None  # the hooked block's fused_attn before bind
        self._probs: torch.Tensor | None = None
        self._tokens: torch.Tensor | None = None

    @property
    def out_features(self) -> int:
        return self.channels

    @property
    def num_heads(self) -> int | None:
        """Heads of the hooked block (the number of maps), None before :meth:`bind`."""
        return None if self._bound is None else int(self._bound[1].attn.num_heads)

    # -- binding -------------------------------------------------------------------------------
    def bind(self, backbone: nn.Module) -> None:
        """Hook the ViT block ``backbone`` stops at and force its attention onto the unfused path.

        Raises ValueError for a backbone that is not a timm ViT with a class token, or whose width
        differs from ``channels``. Binding again moves the hooks to the new backbone.
        """
        name = getattr(backbone, "name", type(backbone).__name__)
        net = getattr(backbone, "model", None)  # timm's features-only wrapper (FeatureGetterNet)
        inner = vit_model(net) if net is not None and hasattr(net, "feature_info") else None
        if net is None or inner is None:
            raise ValueError(f"attention=vit_cls needs a ViT backbone (backbone=vit), got {name}")
        if getattr(inner, "cls_token", None) is None:
            raise ValueError(f"attention=vit_cls needs a ViT with a class token, {name} has none")
        block = feature_stage(net)
        attn = getattr(block, "attn", None)
        if attn is None or not all(hasattr(attn, a) for a in ("fused_attn", "attn_drop", "num_heads")):
            raise ValueError(f"attention=vit_cls needs timm's standard ViT attention block, {name} differs")
        width = getattr(backbone, "out_channels", self.channels)
        if width != self.channels:
            raise ValueError(f"attention.channels={self.channels} but the backbone {name} is {width} wide")
        self.unbind()
        self._was_fused = bool(attn.fused_attn)
        attn.fused_attn = False  # the fused kernel never forms the probabilities
        self._handles = [
            attn.attn_drop.register_forward_hook(self._capture_probs),
            block.register_forward_hook(self._capture_tokens),
        ]
        self._bound = (backbone, block)
        self._prefix = int(inner.num_prefix_tokens)

    def unbind(self) -> None:
        """Remove the hooks and give the block back its fused/unfused setting."""
        for handle in self._handles:
            handle.remove()
        if self._bound is not None and self._was_fused is not None:
            self._bound[1].attn.fused_attn = self._was_fused
        self._handles, self._bound = [], None
        self._probs = self._tokens = None

    # bound methods, not closures: a deep copy of the model re-binds them to the copied module
    def _capture_probs(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self._probs = inputs[0]  # (B, heads, N, N), rows sum to 1; kept in the graph

    def _capture_tokens(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self._tokens = output  # (B, N, C)

    # -- forward -------------------------------------------------------------------------------
    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._bound is None:
            raise RuntimeError("ViTClsAttention: call bind(backbone) before the first forward")
        probs, tokens = self._probs, self._tokens
        self._probs = self._tokens = None  # consume: never reuse a pass's tensors (or keep its graph)
        if probs is None or tokens is None:
            raise RuntimeError("ViTClsAttention: the bound backbone has not run since the last call")
        b, _, gh, gw = fmap.shape
        cls_to_patches = probs[:, :, 0, self._prefix :]  # (B, heads, gh*gw)
        if probs.shape[0] != b or cls_to_patches.shape[-1] != gh * gw:
            raise RuntimeError(
                f"ViTClsAttention: captured attention {tuple(probs.shape)} does not match the feature map "
                f"{tuple(fmap.shape)} (prefix tokens: {self._prefix})"
            )
        cls_to_patches = cls_to_patches / cls_to_patches.sum(-1, keepdim=True).clamp_min(1e-12)
        maps = cls_to_patches.reshape(b, -1, gh, gw)
        return F.normalize(tokens[:, 0], dim=-1), maps
