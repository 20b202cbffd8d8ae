"""ROC, precision-recall and confusion-matrix plots of P(fake) scores (PNGs, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import torch

#: the file stems :func:`plot_curves` writes
CURVES = ("roc", "pr", "confusion")


def plot_curves(
    scores: torch.Tensor, labels: torch.Tensor, threshold: float, out_dir: Path, title: str
) -> list[Path]:
    """``roc.png``, ``pr.png`` and ``confusion.png`` (at ``threshold``) in ``out_dir``; their paths."""
    from lmguide.viz.figures import pyplot

    plt = pyplot()
    from torchmetrics.functional.classification import (
        binary_auroc,
        binary_average_precision,
        binary_confusion_matrix,
        binary_precision_recall_curve,
        binary_roc,
    )

    fpr, tpr, _ = binary_roc(scores, labels)
    prec, rec, _ = binary_precision_recall_curve(scores, labels)
    auc, ap = float(binary_auroc(scores, labels)), float(binary_average_precision(scores, labels))
    for name, (x, y, xl, yl, label) in {
        "roc": (fpr, tpr, "false positive rate", "true positive rate", f"AUC = {auc:.3f}"),
        "pr": (rec, prec, "recall", "precision", f"AP = {ap:.3f}"),
    }.items():
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ax.plot(x.numpy(), y.numpy(), label=label)
        if name == "roc":
            ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8, label="chance")
        ax.legend(loc="lower right" if name == "roc" else "lower left")
        ax.set(xlabel=xl, ylabel=yl, title=f"{title} {name.upper()}", xlim=(0, 1), ylim=(0, 1.02))
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png")
        plt.close(fig)
    cm = binary_confusion_matrix(scores, labels, threshold=threshold).numpy()
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=100)
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in zip([(0, 0), (0, 1), (1, 0), (1, 1)], cm.ravel(), strict=True):
        ax.text(j, i, str(v), ha="center", va="center", color="black")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["real", "fake"],
        yticklabels=["real", "fake"],
        xlabel="predicted",
        ylabel="true",
        title=f"threshold {threshold:.3f}",
    )
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png")
    plt.close(fig)
    return [out_dir / f"{name}.png" for name in CURVES]
