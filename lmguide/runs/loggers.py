"""The loggers of a command (built from the ``logger`` group) and what is sent to them besides scalars:
images (attention overlays, test curves) and precision-recall curves, for TensorBoard and W&B."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from lmguide.runs.errors import ConfigError


def wandb_offline_by_default() -> None:
    """W&B runs offline unless the user configured it: never a login prompt, never a network call."""
    if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        os.environ["WANDB_MODE"] = "offline"


def instantiate_group(cfg) -> list:
    """Each entry of a callbacks/loggers group that has a ``_target_``; an entry with ``enabled: false``
    (an optional callback, e.g. ``callbacks.early_stopping``) is left out, ``enabled`` is not passed on."""
    if not cfg:
        return []
    import hydra

    out = []
    for name, c in cfg.items():
        if c is None or "_target_" not in c:
            continue
        enabled = c.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{name}.enabled must be true or false, got {enabled!r}")
        if enabled:
            out.append(hydra.utils.instantiate({k: v for k, v in c.items() if k != "enabled"}))
    return out


def finish_wandb(loggers: list) -> None:
    """End the W&B run of these loggers (between the jobs of a multirun, and at a command's end)."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()


def log_scalars(loggers: list, scalars: Mapping[str, object], step: int) -> int:
    """Send the numbers among ``scalars`` (text, None and NaN left out) to every TensorBoard and W&B
    logger at ``step``, and flush them; returns how many loggers got them. For what a run computes after
    Lightning's fit and test (the swaps, the held-out sources, intervals): the trainer has finalized the
    loggers by then, and a TensorBoard writer that was closed opens a new event file in the same folder."""
    import math

    numbers = {
        k: float(v)
        for k, v in scalars.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    sent = 0
    for lg in loggers:
        if numbers and type(lg).__name__ in ("TensorBoardLogger", "WandbLogger"):
            lg.log_metrics(numbers, step=step)
            lg.finalize("success")  # TensorBoard: flush and close the event file
            sent += 1
    return sent


def log_images(
    loggers: list,
    images: Mapping[str, Path | np.ndarray],
    step: int | None = None,
    group: str | None = None,
    captions: Sequence[str] | None = None,
) -> None:
    """Send RGB images (uint8 arrays, or PNG paths) to every TensorBoard and W&B logger attached.

    ``images``: tag -> image. TensorBoard gets one image per tag. W&B gets one image per tag too, or,
    with ``group``, all of them under that one key (with ``captions``)."""
    if not any(type(lg).__name__ in ("TensorBoardLogger", "WandbLogger") for lg in loggers):
        return
    import cv2

    def rgb(img) -> np.ndarray:
        return img if isinstance(img, np.ndarray) else cv2.cvtColor(cv2.imread(str(img)), cv2.COLOR_BGR2RGB)

    def for_wandb(img):
        return img if isinstance(img, np.ndarray) else str(img)

    for lg in loggers:
        kind = type(lg).__name__
        if kind == "TensorBoardLogger":
            for tag, img in images.items():
                lg.experiment.add_image(tag, rgb(img), step, dataformats="HWC")
        elif kind == "WandbLogger" and group:
            extra = {"caption": list(captions)} if captions else {}
            lg.log_image(group, [for_wandb(i) for i in images.values()], step=step, **extra)
        elif kind == "WandbLogger":
            for tag, img in images.items():
                lg.log_image(tag, [for_wandb(img)], step=step)


def log_pr_curve(loggers: list, tag: str, labels: torch.Tensor, scores: torch.Tensor, step: int) -> int:
    """Send the precision-recall curve of P(fake) ``scores`` against ``labels`` (1 = fake) to every
    TensorBoard (``add_pr_curve``) and W&B (a precision-recall line plot) logger; returns how many got it.
    A split with one class has no curve: nothing is sent."""
    labels, scores = labels.detach().flatten().cpu(), scores.detach().flatten().float().cpu()
    if labels.numel() == 0 or labels.min() == labels.max():
        return 0
    sent = 0
    for lg in loggers:
        name = type(lg).__name__
        if name == "TensorBoardLogger":
            lg.experiment.add_pr_curve(tag, labels.int(), scores, global_step=step)
            sent += 1
        elif name == "WandbLogger":
            import wandb
            from torchmetrics.functional.classification import binary_precision_recall_curve

            # the curve's points as a table and a line plot (wandb.plot.pr_curve would need pandas)
            precision, recall, _ = binary_precision_recall_curve(scores, labels.long())
            table = wandb.Table(
                columns=["recall", "precision"], data=torch.stack([recall, precision], 1).tolist()
            )
            curve = wandb.plot.line(table, "recall", "precision", title=f"{tag} (P(fake), fake = positive)")
            lg.experiment.log({tag: curve, "trainer/global_step": step})
            sent += 1
    return sent
