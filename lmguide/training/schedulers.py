"""Learning-rate schedules written in optimizer steps (Lightning ``interval: step``).

``warmup_cosine``: linear warm-up over ``warmup_steps`` then a half-cosine down to ``min_lr_factor`` x
the optimiser's lr at ``total_steps`` (``trainer.max_steps``), as a torch ``LambdaLR``.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_factor: float = 0.0
) -> LambdaLR:
    """Multiplier of the initial lr after ``s`` optimizer steps (``s`` = 0 for the first step):

    * ``s < W``: ``(s + 1) / W`` (linear, full lr on the last warm-up step);
    * ``s >= W``: ``f + (1 - f) * (1 + cos(pi * p)) / 2`` with ``p = min(1, (s - W) / (T - W))``,

    where ``W`` = ``warmup_steps``, ``T`` = ``total_steps`` and ``f`` = ``min_lr_factor``; the lr is
    ``f`` x the initial lr from step ``T`` on."""
    if total_steps <= 0:
        raise ValueError(
            f"scheduler=cosine decays over trainer.max_steps, which must be > 0 (got {total_steps})"
        )
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"scheduler.warmup_steps must be in [0, trainer.max_steps={total_steps}), got {warmup_steps}"
        )
    if not 0 <= min_lr_factor <= 1:
        raise ValueError(f"scheduler.min_lr_factor must be in [0, 1], got {min_lr_factor}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
