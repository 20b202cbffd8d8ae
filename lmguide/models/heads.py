"""Classification heads: part features (B, D) -> logits (B, 2)."""

from __future__ import annotations

import torch
from torch import nn


class SoftmaxHead(nn.Module):
    """Linear layer + softmax cross-entropy. ``scale`` multiplies the L2-normalised features first so
    logits start in a useful range (WS-DAN uses 100 with pretrained backbones)."""

    def __init__(self, in_features: int, num_classes: int = 2, scale: float = 16.0, dropout: float = 0.0):
        super().__init__()
        self.scale = scale
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, feats: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.drop(feats * self.scale))
