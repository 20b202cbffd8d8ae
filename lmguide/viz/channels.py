"""Channel attention drawn: the SE / CBAM channel gate of one face as a bar chart of its top channels,
and the spatial map of those channels.

SE (Hu et al., CVPR 2018) and CBAM (Woo et al., ECCV 2018) re-weight the backbone's channels with a
gate in (0, 1). Which channels the gate keeps says what the detector listens to; where those channels
fire says where it looks. The spatial map is the energy ``mean_k (g_k · x_k)²`` of the top-k gated
channels, the same energy the SE module's guided map uses over all channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lmguide.models.attention.two_level import attention_input, inner_attention
from lmguide.runs.errors import ConfigError
from lmguide.viz.figures import figure_rgb, pyplot


@dataclass
class ChannelGates:
    gates: np.ndarray  # (C,) the gate of every channel, in (0, 1)
    top: np.ndarray  # (k,) channel indices, highest gate first
    spatial: np.ndarray  # (h, w) energy of the top-k gated channels


def has_channel_gate(model: nn.Module) -> bool:
    return callable(getattr(inner_attention(model.attention), "channel_gate", None))


def channel_gates(model: nn.Module, image: torch.Tensor, top_k: int = 8) -> ChannelGates:
    """The channel gate of ``model.attention`` (SE, CBAM) for one normalised image (3, s, s)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"channels must be a number of channels >= 1, got {top_k!r}")
    if not has_channel_gate(model):
        raise ConfigError(
            f"{type(model.attention).__name__} has no channel gate: channel views need attention=se or cbam"
        )
    with torch.no_grad():
        fmap = attention_input(model.backbone(image[None]))  # (1, C, h, w): the map the attention gates
        gate = inner_attention(model.attention).channel_gate(fmap)  # (1, C, 1, 1)
    gates = gate[0, :, 0, 0].float()
    top = torch.argsort(gates, descending=True)[: min(top_k, gates.numel())]
    gated = (fmap[0] * gate[0]).float()  # (C, h, w)
    spatial = gated[top].pow(2).mean(0)
    return ChannelGates(gates.cpu().numpy(), top.cpu().numpy(), spatial.cpu().numpy())


def gate_bar_chart(cg: ChannelGates, size: int = 256) -> np.ndarray:
    """A ``size`` x ``size`` RGB bar chart of the top channels' gates, the mean gate as a dashed line."""
    dpi = 100
    fig, ax = pyplot().subplots(figsize=(size / dpi, size / dpi), dpi=dpi)
    values = cg.gates[cg.top]
    ax.bar(range(len(cg.top)), values, color="tab:orange")
    ax.axhline(float(cg.gates.mean()), color="k", ls="--", lw=1, label=f"mean of {cg.gates.size}")
    ax.set_xticks(range(len(cg.top)), [str(int(c)) for c in cg.top], fontsize=6, rotation=90)
    ax.set_ylim(0, 1)
    ax.set_xlabel("channel", fontsize=7)
    ax.set_ylabel("gate", fontsize=7)
    ax.tick_params(axis="y", labelsize=6)
    ax.set_title(f"top {len(cg.top)} channel gates", fontsize=8)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout(pad=0.3)
    return figure_rgb(fig)
