"""Heat maps drawn so that they say what they show: one colour map (matplotlib's jet) for every heat
map, a colour bar beside each one spanning the values of its map, and a warning written on the picture
where the map is flat.

Every heat map is min-max scaled before it is coloured, so its colours alone never say whether the map
spans 0 to 1 or 0.2500 to 0.2501. The colour bar does: its ends are the map's minimum and maximum. A
flat map (one value everywhere) has nothing to scale; drawn silently it is one colour that looks like
a finding. :func:`flat_warning` names it instead, and the pictures carry the sentence.

:func:`tile_grid` lays out tiles (RGB pictures, or :class:`Heat` tiles with their map) in rows at their
own pixels (``figimage``: no resampling, grid lines stay one pixel wide), each heat tile followed by
its colour bar, with optional column labels, row labels and a title.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lmguide.viz.figures import figure_rgb

#: the colour map of every heat map the project draws (the overlays and their colour bars)
HEAT_CMAP = "jet"
#: a map is flat when max - min <= FLAT_RTOL x max|value| (float32 keeps about 7 significant digits,
#: so a spread a million times below the values is rounding, not structure) or <= FLAT_ATOL (the
#: floor the min-max scaling divides by: a smaller spread is drawn as one colour anyway)
FLAT_RTOL = 1e-6
FLAT_ATOL = 1e-8
DPI = 100


def colormap():
    """The heat maps' matplotlib colour map."""
    import matplotlib

    return matplotlib.colormaps[HEAT_CMAP]


def is_flat(values: np.ndarray) -> bool:
    """Whether ``values`` are one value everywhere, to float32 precision (see :data:`FLAT_RTOL`)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or not np.isfinite(v).all():
        return v.size == 0
    lo, hi = float(v.min()), float(v.max())
    return hi - lo <= max(FLAT_RTOL * max(abs(lo), abs(hi)), FLAT_ATOL)


def flat_warning(values: np.ndarray, what: str, why: str) -> str:
    """``"flat <what>: <why>"`` when ``values`` are flat, else ``""``."""
    return f"flat {what}: {why}" if is_flat(values) else ""


def attention_warning(values: np.ndarray) -> str:
    """The warning of a flat attention map, else ``""``."""
    return flat_warning(values, "attention map", "no spatial preference")


@dataclass
class Heat:
    """A heat tile: the picture as drawn and the map it shows (the colour bar spans its values)."""

    rgb: np.ndarray  # (H, W, 3) RGB uint8: the map coloured, alone or over a face
    values: np.ndarray  # the map itself, any size
    label: str = ""  # what the values are: the colour bar's label
    warning: str = ""  # written on the picture ("": nothing to warn of)
    name: str = ""  # which map it is, to name it in the warning given to the caller


def warnings_of(tiles) -> list[str]:
    """The distinct warnings of ``tiles`` (any nesting of lists of tiles), each as ``"<name>: <warning>"``,
    in order."""
    out: list[str] = []
    for t in tiles:
        if isinstance(t, list | tuple):
            found = warnings_of(t)
        else:
            w, name = getattr(t, "warning", ""), getattr(t, "name", "")
            found = [f"{name}: {w}" if w and name else w]
        out += [w for w in found if w and w not in out]
    return out


def _fit(text: str, width_px: float, font_px: float) -> str:
    """``text`` wrapped to lines of about ``width_px`` pixels at font height ``font_px``."""
    return textwrap.fill(text, max(int(width_px / (0.56 * font_px)), 8)) if text else ""


def _fit_box(text: str, w: int, h: int, fs: float) -> tuple[float, str]:
    """(font size, ``text`` wrapped) that fits in 90 % of a ``w`` x ``h`` tile, down to 4 points."""
    while True:
        font = fs * DPI / 72
        wrapped = _fit(text, 0.9 * w, font)
        if fs <= 4 or (wrapped.count("\n") + 1) * 1.25 * font <= 0.9 * h:
            return fs, wrapped
        fs -= 0.5


def _lines(texts: Sequence[str]) -> int:
    return max((t.count("\n") + 1 for t in texts if t), default=0)


def _figure(width: int, height: int):
    """A white Agg Figure of ``width`` x ``height`` pixels, outside pyplot: no global state, so the
    page's worker threads can draw at once (matplotlib's advice for web servers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=((width + 0.5) / DPI, (height + 0.5) / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _colorbar(fig, heat: Heat, rect: tuple[float, float, float, float], fs: float) -> None:
    import matplotlib.colors

    v = np.asarray(heat.values, dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    flat = is_flat(v)
    norm = matplotlib.colors.Normalize(lo, lo + max(abs(lo), 1.0) if flat else hi)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=colormap())
    cb = fig.colorbar(sm, cax=fig.add_axes(rect))
    ticks = [lo] if flat else [lo, (lo + hi) / 2, hi]
    cb.set_ticks(ticks, labels=[f"{t:.3g}" for t in ticks])
    cb.ax.tick_params(labelsize=fs, length=2, pad=1)
    if heat.label:
        cb.set_label(heat.label, fontsize=fs, labelpad=1)


def _column_widths(rows, n_cols: int, w: int, pad: int, font: float) -> list[int]:
    """Pixels per column: the tile, then its colour bar (bar, ticks and labels, the bar's label) when
    any tile of the column is a :class:`Heat`, or a gap."""
    bar = pad + max(6, round(w * 0.05)) + 4 + round(8 * 0.6 * font) + pad  # tick labels up to 8 chars
    out = []
    for c in range(n_cols):
        heats = [r[c] for r in rows if c < len(r) and isinstance(r[c], Heat)]
        out.append(w + (bar + (round(1.4 * font) if any(t.label for t in heats) else 0) if heats else pad))
    return out


def tile_grid(
    rows: Sequence[Sequence[np.ndarray | Heat]],
    col_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    title: str = "",
):
    """The matplotlib Figure of ``rows`` of equal-size tiles at their own pixels: each :class:`Heat`
    followed by its colour bar and its warning written across it; ``col_labels`` above the columns,
    ``row_labels`` (vertical) left of the rows, ``title`` on top. Draw it with :func:`render`."""
    shapes = {(t.rgb if isinstance(t, Heat) else t).shape[:2] for r in rows for t in r}
    if len(shapes) != 1:
        raise ValueError(f"tile_grid: the tiles must have one size, got {sorted(shapes)}")
    ((h, w),) = shapes
    n_cols = max(len(r) for r in rows)
    fs = min(max(min(h, w) / 28, 6.0), 10.0)  # font size in points
    font = fs * DPI / 72  # its height in pixels
    pad = max(3, round(min(h, w) * 0.02))
    col_w = _column_widths(rows, n_cols, w, pad, font)
    col_text = [_fit(lab, cw - pad, font) for lab, cw in zip(col_labels, col_w, strict=False)]
    row_text = [_fit(lab, h, font) for lab in row_labels]
    title_text = _fit(title, sum(col_w), font * 1.15)
    title_h = round(_lines([title_text]) * 1.35 * font * 1.15) + (pad if title_text else 0)
    label_h = round(_lines(col_text) * 1.3 * font) + (pad if col_text else 0)
    left = round(_lines(row_text) * 1.3 * font) + (2 * pad if row_text else 0)
    gap = pad if len(rows) > 1 else 0
    width, height = left + sum(col_w), title_h + label_h + len(rows) * h + (len(rows) - 1) * gap
    fig = _figure(width, height)

    def text(x: float, y: float, s: str, **kw) -> None:  # at pixel (x, y), y from the top
        fig.text(x / width, 1 - y / height, s, fontsize=kw.pop("fontsize", fs), **kw)

    xs = [left + sum(col_w[:c]) for c in range(n_cols)]
    if title_text:
        text(width / 2, title_h / 2, title_text, ha="center", va="center", fontsize=fs * 1.15)
    for c, label in enumerate(col_text):
        text(xs[c] + w / 2, title_h + label_h - pad / 2, label, ha="center", va="bottom")
    margin = max(0.7 * font, 0.05 * h)  # above and below a colour bar: room for its end ticks' labels
    for r, row in enumerate(rows):
        top = title_h + label_h + r * (h + gap)
        if r < len(row_text) and row_text[r]:
            text(pad, top + h / 2, row_text[r], rotation=90, ha="left", va="center")
        for c, tile in enumerate(row):
            img = tile.rgb if isinstance(tile, Heat) else tile
            fig.figimage(np.ascontiguousarray(img), xo=xs[c], yo=height - top - h, origin="upper")
            if not isinstance(tile, Heat):
                continue
            bar_x, bar_w = xs[c] + w + pad, max(6, round(w * 0.05))
            rect = (
                bar_x / width,
                (height - top - h + margin) / height,
                bar_w / width,
                (h - 2 * margin) / height,
            )
            _colorbar(fig, tile, rect, fs)
            if tile.warning:
                box = {"facecolor": "black", "alpha": 0.75, "edgecolor": "none", "pad": 2}
                size, warning = _fit_box(tile.warning, w, h, fs)
                text(xs[c] + w / 2, top + h / 2, warning, ha="center", va="center", color="white", bbox=box,
                     fontsize=size)  # fmt: skip
    return fig


def render(fig) -> np.ndarray:
    """A :func:`tile_grid` figure drawn: (H, W, 3) RGB uint8 (the figure is closed)."""
    return figure_rgb(fig)


def heat_tile(heat: Heat) -> np.ndarray:
    """One heat tile at its own pixels with its colour bar to the right (and its warning, if any)."""
    return render(tile_grid([[heat]]))
