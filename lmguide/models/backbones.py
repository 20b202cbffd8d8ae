"""timm backbones that return one feature map (B, C, h, w) for the attention module."""

from __future__ import annotations

import timm
import torch
from torch import nn


class TimmBackbone(nn.Module):
    """``timm.create_model(name, features_only=True)`` cut after ``out_index``.

    ``out_index`` picks the feature level the attention works on: a stage of a CNN (0 = stride 2 …
    4 = stride 32 for EfficientNet) or a block of a ViT (its tokens reshaped to the patch grid).
    ``pretrained=True`` downloads weights from the Hugging Face hub; without network that fails with
    an error that says so.
    """

    def __init__(self, name: str, pretrained: bool = False, out_index: int = 3, **model_kwargs):
        super().__init__()
        if name not in timm.list_models():
            raise ValueError(f"backbone.name: unknown timm model {name!r} (see timm.list_models())")
        if out_index < 0:
            raise ValueError(f"backbone.out_index must be >= 0 (a feature level of {name}), got {out_index}")
        try:
            # the "getter" wrapper prunes every layer after out_index: timm's default feature wrapper for
            # EfficientNet keeps and runs the later stages although their output is never used
            self.model = timm.create_model(
                name,
                pretrained=pretrained,
                features_only=True,
                out_indices=(out_index,),
                feature_cls="getter",
                **model_kwargs,
            )
        except (OSError, RuntimeError) as err:
            if pretrained:
                raise RuntimeError(
                    f"could not load pretrained weights for {name}: {err}. Pretrained weights are downloaded "
                    "from the Hugging Face hub; without network access use backbone.pretrained=false or "
                    "pre-populate the hub cache (HF_HOME)."
                ) from err
            raise
        self.name = name
        self.out_channels: int = self.model.feature_info.channels()[-1]
        self.reduction: int = self.model.feature_info.reduction()[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[-1]  # (B, C, h, w)
