"""The NaN/Inf guard of a training step: skip an update whose loss terms or gradients are not finite,
stop after too many such steps in a row.

Under ``16-mixed`` a GradScaler multiplies the loss before backward; when that overflows the gradients
(the loss itself finite), the scaler skips the step and halves its scale: that is its business, not a
bad step. Such an overflow counts as one only once the scale is below 1, where no scaling is left to
blame (the gradients themselves are not finite).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import torch
from torch import nn

log = logging.getLogger(__name__)


class NonFiniteGuard:
    """Counts skipped steps (over the run: ``skipped``; in a row: ``in_row``) and raises
    :class:`FloatingPointError` once ``max_bad_steps`` steps in a row were not finite."""

    def __init__(self, max_bad_steps: int = 10):
        if max_bad_steps < 1:
            raise ValueError(f"model.max_bad_steps must be >= 1, got {max_bad_steps}")
        self.max_bad_steps = max_bad_steps
        self.skipped = 0  # kept in checkpoints by the LightningModule
        self.in_row = 0
        self.overflows = 0  # gradient overflows left to a GradScaler (16-mixed) over the run

    def check(
        self,
        params: Iterable[nn.Parameter],
        terms: Mapping[str, torch.Tensor],
        step: int,
        scaler: torch.amp.GradScaler | None = None,
    ) -> bool:
        """True when the step may update; else the gradients are dropped (the optimizer then leaves the
        weights and its state alone). Under DDP the gradients are already averaged, so every rank
        skips the same steps. ``scaler``: the run's enabled GradScaler (``16-mixed``), whose unscaled
        gradients these are: an overflow with finite loss terms is left to it (see the module doc)."""
        params = list(params)
        grads = [p.grad for p in params if p.grad is not None]
        # one device sync per step: NaN/Inf in a gradient makes its norm so, in a term the term itself
        norms = torch._foreach_norm(grads) if grads else []
        checks = [*(n.float() for n in norms), *(v.float() for v in terms.values())]
        if not checks or bool(torch.isfinite(torch.stack(checks)).all()):
            self.in_row = 0
            return True
        bad_terms = [n for n, v in terms.items() if not torch.isfinite(v).all()]
        if not bad_terms and scaler is not None and scaler.is_enabled() and scaler.get_scale() >= 1.0:
            self.overflows += 1  # the scaler saw the inf in unscale_: it skips this step, halves its scale
            log.info(
                "step %d: gradients overflowed at loss scale %g: the GradScaler skips the step (not a "
                "bad step; %d overflows in all)", step, scaler.get_scale(), self.overflows,
            )  # fmt: skip
            return False
        for p in params:
            p.grad = None
        self.skipped += 1
        self.in_row += 1
        what = f"loss terms {bad_terms}" if bad_terms else "gradients"
        log.warning(
            "step %d: non-finite %s, update skipped (%d in a row, %d in all)",
            step, what, self.in_row, self.skipped,
        )  # fmt: skip
        if self.in_row >= self.max_bad_steps:
            raise FloatingPointError(
                f"{self.in_row} training steps in a row had non-finite {what} (NaN/Inf), up to "
                f"step {step}; stopping (model.max_bad_steps={self.max_bad_steps}). The "
                "weights were never updated from them: checkpoints/last.ckpt holds the last good state. "
                "Lower optim.lr, check the data, or use trainer=default precision"
            )
        return False
