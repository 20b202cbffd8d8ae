"""What the run sends to its loggers besides scalars: precision-recall curves for TensorBoard and W&B."""

from __future__ import annotations

import torch


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
