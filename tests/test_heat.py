"""Heat maps that say what they show (issue 30): a matplotlib colour bar beside every heat tile spanning
its map's values, tiles at their own pixels, and a warning written on a flat map."""

from __future__ import annotations

import numpy as np
import pytest

from lmguide.viz import heat as heat_mod
from lmguide.viz.heat import Heat, attention_warning, is_flat, render, tile_grid, warnings_of
from lmguide.viz.overlays import heat_map, heat_overlay

S = 64


def colorbars(fig) -> list:
    """The matplotlib colour bars of ``fig`` (each colour bar's axes holds its Colorbar)."""
    return [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]


def texts(fig) -> list[str]:
    return [t.get_text().replace("\n", " ") for t in fig.texts]


def _map(seed=0, shape=(8, 8), scale=1.0, offset=0.0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * scale + offset).astype(np.float32)


@pytest.mark.parametrize(
    ("values", "flat"),
    [
        (np.zeros((4, 4)), True),  # a Grad-CAM whose ReLU kept nothing
        (np.full((4, 4), 0.0625), True),  # attention spread evenly over 16 cells
        (np.full((4, 4), 1000.0) + np.eye(4) * 1e-4, True),  # 1e-7 relative: float32 rounding
        (np.full((4, 4), 0.0625) + np.eye(4) * 1e-4, False),  # 0.16 % of the values: structure
        (np.eye(4) * 1e-9, True),  # below the floor the scaling divides by
        (np.eye(4) * 1e-6, False),
    ],
)
def test_a_map_is_flat_when_its_spread_is_rounding(values, flat):
    assert is_flat(values) is flat
    assert bool(attention_warning(values)) is flat


def test_each_heat_tile_has_a_colour_bar_spanning_its_map_and_keeps_its_pixels():
    values = _map(scale=0.002, offset=0.01)  # attention shares: the colours alone would not say so
    tile = heat_overlay(np.full((S, S, 3), 128, np.uint8), values)
    face = np.full((S, S, 3), 90, np.uint8)
    fig = tile_grid([[face, Heat(tile, values, "attention")]])
    (cb,) = colorbars(fig)  # the face has none
    assert cb.cmap.name == "jet"
    assert (cb.norm.vmin, cb.norm.vmax) == pytest.approx((values.min(), values.max()))
    ticks = [t.get_text() for t in cb.ax.get_yticklabels()]
    assert ticks[0] == f"{values.min():.3g}" and ticks[-1] == f"{values.max():.3g}"
    assert cb.ax.get_ylabel() == "attention"
    img = render(fig)
    assert img.shape[0] == S and img.shape[1] > 2 * S  # the bar to the right of the heat tile
    assert np.array_equal(img[:, :S], face)  # figimage: no resampling
    assert any(np.array_equal(img[:, x : x + S], tile) for x in range(S, img.shape[1] - S + 1))


def test_heat_map_colours_are_the_colour_bar_colours():
    values = _map(1, (S, S), scale=3.0, offset=-1.0)  # at the tile size: no resize
    lo, hi = values.min(), values.max()
    expected = (heat_mod.colormap()((values - lo) / (hi - lo))[..., :3] * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(heat_map(values, S, S), expected)


def test_a_flat_map_is_written_over_with_why_and_returned_by_name():
    flat = np.full((8, 8), 0.25, np.float32)
    warning = attention_warning(flat)
    assert warning == "flat attention map: no spatial preference"
    good = _map(2)
    tiles = [
        Heat(heat_overlay(np.zeros((S, S, 3), np.uint8), flat), flat, "", warning, "attention map 1"),
        Heat(heat_overlay(np.zeros((S, S, 3), np.uint8), good), good, "", attention_warning(good), "map 0"),
    ]
    fig = tile_grid([tiles], ["map 1", "map 0"], title="step 3")
    assert warning in texts(fig)  # drawn on the picture
    assert {"map 1", "map 0", "step 3"} <= set(texts(fig))
    flat_bar, good_bar = colorbars(fig)
    assert [t.get_text() for t in flat_bar.ax.get_yticklabels()] == ["0.25"]  # the one value it has
    assert len(good_bar.ax.get_yticklabels()) == 3
    assert warnings_of([tiles, tiles]) == [f"attention map 1: {warning}"]  # once, named
    render(fig)


def test_tiles_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="one size"):
        tile_grid([[np.zeros((S, S, 3), np.uint8), np.zeros((S, 2 * S, 3), np.uint8)]])


def test_tiles_are_drawn_outside_pyplot_so_threads_can_draw_at_once():
    """The page explains faces in worker threads: its figures must not share pyplot's global state."""
    from concurrent.futures import ThreadPoolExecutor

    from lmguide.viz.figures import pyplot

    plt = pyplot()
    before = plt.get_fignums()
    values = [_map(seed) for seed in range(8)]
    tiles = [Heat(heat_map(v, S, S), v, "attention") for v in values]
    serial = [render(tile_grid([[t]])) for t in tiles]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda t: render(tile_grid([[t]])), tiles))
    assert all(np.array_equal(a, b) for a, b in zip(serial, threaded, strict=True))
    assert plt.get_fignums() == before  # none left open in pyplot
    fig = plt.figure()  # a pyplot figure given to figure_rgb is still closed
    heat_mod.figure_rgb(fig)
    assert plt.get_fignums() == before
