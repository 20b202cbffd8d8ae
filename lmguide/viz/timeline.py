"""A video's timeline, drawn for the web page and predict's HTML report alike."""

from __future__ import annotations

import numpy as np


def score_plot(
    frame_scores: list[tuple[int, float]],
    threshold: float,
    title: str,
    fake_run: tuple[int, int] | None = None,
) -> np.ndarray:
    """The video's timeline: P(fake) per sampled frame, the frames at or above the verdict threshold
    in red, the run of frames that made the video fake shaded, and the threshold dashed (RGB uint8)."""
    from lmguide.viz.figures import figure_rgb, pyplot

    fig, ax = pyplot().subplots(figsize=(7, 2.6), dpi=100)
    if frame_scores:
        x, y = zip(*frame_scores, strict=True)
        ax.plot(x, y, "o-", ms=3, lw=1.2, label="P(fake) of the frame's face")
        over = [(f, p) for f, p in frame_scores if p >= threshold]
        if over:
            ax.plot(*zip(*over, strict=True), "o", ms=5, color="#b00", label="at or above the threshold")
    if fake_run is not None:
        ax.axvspan(fake_run[0] - 0.5, fake_run[1] + 0.5, color="#b00", alpha=0.15, label="the fake run")
    ax.axhline(threshold, ls="--", color="grey", lw=1, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="frame", ylabel="P(fake)", ylim=(-0.02, 1.02), title=title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return figure_rgb(fig)
