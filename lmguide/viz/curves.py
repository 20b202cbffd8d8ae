"""ROC, precision-recall and confusion-matrix plots of P(fake) scores (PNGs, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import torch

#: the file stems :func:`plot_curves` writes
CURVES = ("roc", "pr", "confusion")


def confusion_title(title: str, threshold: float, threshold_note: str = "") -> str:
    """The confusion matrix's title: the scored set (``title``, e.g. ``test (frames)``), the threshold
    and where it comes from (``threshold_note``, e.g. ``calibrated on val``)."""
    note = f"\n(threshold {threshold_note})" if threshold_note else ""
    return f"{title}: fake at P(fake) >= {threshold:.3f}{note}"


def plot_curves(
    scores: torch.Tensor,
    labels: torch.Tensor,
    threshold: float,
    out_dir: Path,
    title: str,
    threshold_note: str = "",
) -> list[Path]:
    """``roc.png``, ``pr.png`` and ``confusion.png`` in ``out_dir``; their paths. ``title`` names the
    scored split; the confusion matrix counts a face as fake at ``P(fake) >= threshold`` (the rule of
    :func:`~lmguide.evaluation.metrics.binary_report` and predict's verdicts) and its title says so, with
    where the threshold comes from (``threshold_note``)."""
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
    # torchmetrics thresholds float scores with ">": a face at the threshold counts as binary_report counts it
    cm = binary_confusion_matrix((scores >= threshold).long(), labels.long()).numpy()
    fig, ax = plt.subplots(figsize=(3.8, 3.6), dpi=100)
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in zip([(0, 0), (0, 1), (1, 0), (1, 1)], cm.ravel(), strict=True):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["real", "fake"],
        yticklabels=["real", "fake"],
        xlabel="predicted",
        ylabel="true",
    )
    ax.set_title(confusion_title(title, threshold, threshold_note), fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png")
    plt.close(fig)
    return [out_dir / f"{name}.png" for name in CURVES]
