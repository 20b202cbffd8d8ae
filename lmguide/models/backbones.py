"""timm backbones that return one feature map (B, C, h, w) for the attention module, and a video
backbone (:class:`FrameLSTM`) that runs such a CNN on every frame of a clip and an LSTM over the frames.

The tested configurations are the files of ``conf/backbone`` (see :data:`BACKBONES`); any other timm
model name works through ``backbone.name`` as long as timm can build it with ``features_only``.
"""

from __future__ import annotations

import re

import timm
import torch
from torch import nn

#: conf/backbone/<key>.yaml -> the timm model it builds (each has a test in tests/test_backbones.py)
BACKBONES = {
    "efficientnet_b0": "efficientnet_b0",
    "efficientnet_b4": "efficientnet_b4",
    "xception": "legacy_xception",
    "resnet50": "resnet50",
    "vit": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "swin": "swin_tiny_patch4_window7_224",
    "efficientnet_lstm": "efficientnet_b0",
}

#: the window Swin was pretrained with; an automatic window stays as close to it as the input allows
_SWIN_PRETRAINED_WINDOW = 7


def _feature_levels(name: str, model_kwargs: dict) -> int:
    """How many feature levels (``out_index`` values) timm offers for ``name``: CNN stages, ViT blocks.

    The full model is built on the meta device (no memory, no initialisation: a few ms)."""
    try:
        with torch.device("meta"):
            net = timm.create_model(name, pretrained=False, **model_kwargs)
    except Exception:  # a model whose constructor needs real tensors: build it for real (slow path)
        net = timm.create_model(name, pretrained=False, **model_kwargs)
    return len(net.feature_info)


def swin_window(grid: int, stages: int = 4, preferred: int = _SWIN_PRETRAINED_WINDOW) -> int:
    """A Swin window size that tiles every stage's token grid (``grid``, ``grid/2``, … for ``stages``).

    A stage whose grid is not larger than the window attends globally (timm shrinks the window to the
    grid), so the window only has to divide the grids larger than it. Among the windows that do, the
    one closest to ``preferred`` (the pretrained 7) wins, the larger on a tie: 224 px -> 7, 128 px -> 8,
    96 px -> 6, 64 px -> 8. timm resizes the pretrained relative-position tables to the new window.
    """
    grids = [grid >> i for i in range(stages)]
    for w in sorted(range(1, grid + 1), key=lambda w: (abs(w - preferred), -w)):
        if all(g % w == 0 for g in grids if g > w):
            return w
    return grid  # unreachable: w = grid always qualifies


def _patch_size(name: str) -> int | None:
    m = re.search(r"patch(\d+)", name)
    return int(m.group(1)) if m else None


def _input_kwargs(name: str, model_kwargs: dict) -> dict:
    """Check ``img_size`` against what the transformer can tile and pick Swin's window for it."""
    size = model_kwargs.get("img_size")
    patch = _patch_size(name)
    if size is None or patch is None:
        return model_kwargs
    if name.startswith("swin_"):
        stride = patch * 8  # the patch embedding, then three 2x2 patch merges
        if size < stride or size % stride:
            raise ValueError(
                f"backbone.img_size (= data.image_size): {name} needs an input side that is a multiple "
                f"of {stride} (patch {patch}, then three 2x2 patch merges), got {size}; "
                f"e.g. 64, 96, 128, 160 or 224"
            )
        if model_kwargs.get("window_size") is None:
            return {**model_kwargs, "window_size": swin_window(size // patch)}
    elif name.startswith(("vit_", "deit")) and size % patch:
        raise ValueError(
            f"backbone.img_size (= data.image_size): {name} cuts the input into {patch}-px patches, "
            f"so it needs a multiple of {patch}, got {size}"
        )
    return model_kwargs


def vit_model(net: nn.Module) -> nn.Module | None:
    """The timm ViT inside a TimmBackbone's features-only ``.model`` (patch tokens with prefix tokens),
    or None for any other architecture."""
    inner = getattr(net, "model", net)  # features_only ViTs are wrapped in a FeatureGetterNet
    return inner if all(hasattr(inner, a) for a in ("num_prefix_tokens", "patch_embed")) else None


def feature_stage(net: nn.Module) -> nn.Module:
    """The block/stage of a TimmBackbone's features-only ``.model`` that ``out_index`` picks."""
    inner = getattr(net, "model", net)
    return inner.get_submodule(net.feature_info.module_name()[-1])


class TimmBackbone(nn.Module):
    """``timm.create_model(name, features_only=True)`` cut after ``out_index``.

    ``out_index`` picks the feature level the attention works on: a stage of a CNN (0 = stride 2 …
    4 = stride 32 for EfficientNet, ResNet, Xception; Swin has 4 stages of stride 4 … 32) or a block
    of a ViT (its tokens reshaped to the patch grid). The output is always NCHW: timm's "getter"
    feature wrapper also turns Swin's NHWC stages and ViT tokens into (B, C, h, w) maps.
    ``pretrained=True`` downloads weights from the Hugging Face hub (or GitHub for a few models such
    as legacy_xception); without network that fails with an error that says so.
    ``model_kwargs`` go to timm (``img_size`` for transformers; Swin's ``window_size``, null = chosen
    for ``img_size`` by :func:`swin_window`). A keyword set to null means "timm's default".
    """

    def __init__(self, name: str, pretrained: bool = False, out_index: int = 3, **model_kwargs):
        super().__init__()
        if name not in timm.list_models():
            raise ValueError(
                f"backbone.name: unknown timm model {name!r}; the tested ones are "
                f"{', '.join(sorted(set(BACKBONES.values())))} (backbone={', '.join(BACKBONES)}), "
                "and any name from timm.list_models() that supports features_only"
            )
        if isinstance(out_index, bool) or not isinstance(out_index, int):
            raise ValueError(f"backbone.out_index must be an integer, got {out_index!r}")
        model_kwargs = {k: v for k, v in model_kwargs.items() if v is not None}
        model_kwargs = _input_kwargs(name, model_kwargs)
        levels = _feature_levels(name, model_kwargs)
        if not 0 <= out_index < levels:
            raise ValueError(
                f"backbone.out_index must be in 0..{levels - 1} for {name} (its {levels} feature "
                f"levels), got {out_index}"
            )
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
                    "from the Hugging Face hub (or GitHub); without network access use "
                    "backbone.pretrained=false or pre-populate the cache (HF_HOME, TORCH_HOME)."
                ) from err
            raise
        self.name, self.out_index = name, out_index
        self.model_kwargs = model_kwargs
        self.out_channels: int = self.model.feature_info.channels()[-1]
        self.reduction: int = self.model.feature_info.reduction()[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[-1]  # (B, C, h, w)


class ClipLSTM(nn.Module):
    """Frame features (B, T, D) -> one clip feature (B, hidden) (both directions concatenated when
    bidirectional): the LSTM's last hidden state, after it has read the whole clip."""

    def __init__(
        self,
        in_features: int,
        hidden_size: int = 256,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.lstm = nn.LSTM(
            in_features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.out_features = hidden_size * (2 if bidirectional else 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(feats)  # h: (layers * directions, B, hidden)
        if self.lstm.bidirectional:
            return torch.cat([h[-2], h[-1]], dim=-1)
        return h[-1]


class FrameLSTM(TimmBackbone):
    """A video backbone: the timm CNN of :class:`TimmBackbone` on every frame of a clip, then an LSTM.

    The CNN part is used exactly like a frame backbone (``forward`` maps frames (N, 3, S, S) to feature
    maps), so the attention module and the landmark loss work per frame. ``clip_frames`` marks the
    model as a clip model: :class:`~lmguide.models.module.LandmarkGuidedDetector` then expects clips
    (B, T, 3, S, S), runs backbone + attention on the B·T frames and feeds the T frame features of
    each clip to :meth:`temporal` (an LSTM) whose clip feature goes to the head. The DataModule reads
    ``clip_frames`` too (``data.clip_frames`` interpolates ``backbone.clip_frames``) and yields clips.
    """

    def __init__(
        self,
        name: str = "efficientnet_b0",
        pretrained: bool = False,
        out_index: int = 3,
        clip_frames: int = 8,
        hidden_size: int = 256,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        **model_kwargs,
    ):
        if isinstance(clip_frames, bool) or not isinstance(clip_frames, int) or clip_frames < 1:
            raise ValueError(f"backbone.clip_frames must be an integer >= 1, got {clip_frames!r}")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"backbone.hidden_size and backbone.num_layers must be >= 1, got {hidden_size}, {num_layers}"
            )
        super().__init__(name, pretrained, out_index, **model_kwargs)
        self.clip_frames = clip_frames
        self._lstm_args = dict(
            hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, dropout=dropout
        )

    def temporal(self, in_features: int) -> ClipLSTM:
        """The clip model over frame features of size ``in_features`` (the attention's output)."""
        return ClipLSTM(in_features, **self._lstm_args)
