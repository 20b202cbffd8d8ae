"""matplotlib for lmguide's pictures: the headless (Agg) pyplot, and a figure as an RGB array."""

from __future__ import annotations

import numpy as np


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported when first drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_rgb(fig) -> np.ndarray:
    """Draw ``fig`` (an Agg canvas), close it if pyplot holds it (also on error) and return its pixels:
    (H, W, 3) RGB uint8."""
    try:
        fig.canvas.draw()
        return np.ascontiguousarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
    finally:
        if getattr(fig.canvas, "manager", None) is not None:  # a pyplot figure
            pyplot().close(fig)
