"""The attention overlays: every map at its own resolution (one colour per cell, the grid faint), each
landmark region outlined in its own colour, and the training grid's labels, colour bars and warnings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmguide.viz.heat import Heat, render, warnings_of
from lmguide.viz.overlays import REGION_COLORS, attention_figure, attention_row, grid_overlay, outline_legend

S = 64


def _image() -> torch.Tensor:
    return torch.zeros(3, S, S)  # ImageNet-normalised zeros: a flat grey face


def _regions() -> torch.Tensor:
    r = torch.zeros(3, S, S)
    r[0, 10:20, 10:54] = 1  # eyes
    r[1, 24:36, 26:38] = 1  # nose
    r[2, 42:52, 18:46] = 1  # mouth
    return r


def test_each_map_is_drawn_cell_by_cell_with_a_faint_grid():
    rgb = np.full((S, S, 3), 128, np.uint8)
    attn = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = grid_overlay(rgb, attn, grid=0.3)
    cell = S // 4
    inside = out[1 : cell - 1, 1 : cell - 1].reshape(-1, 3)  # one cell away from its borders
    assert (inside == inside[0]).all()  # one flat colour: no interpolation inside a cell
    assert not np.array_equal(out[cell // 2, cell // 2], out[cell // 2, cell + cell // 2])  # cells differ
    border = out[cell, cell // 2].astype(int)  # on the grid line between two rows of cells
    above, solid = out[cell - 2, cell // 2].astype(int), grid_overlay(rgb, attn, grid=1.0)[cell, cell // 2]
    assert (solid == 255).all()  # a solid grid is white...
    assert (np.abs(border - above) < np.abs(solid.astype(int) - above)).all()  # ...the faint one is not


def test_each_map_tile_outlines_each_region_in_its_colour():
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    row = attention_row(_image(), maps, _regions().amax(0), _regions(), ("eyes", "nose", "mouth"))
    assert len(row) == 4  # face | mean | 2 heads
    assert all(isinstance(t, Heat) for t in row[1:]) and not isinstance(row[0], Heat)
    for t in row[1:]:  # every map tile holds every region's outline colour
        for color in REGION_COLORS.values():
            assert (t.rgb.reshape(-1, 3) == color).all(1).any(), color
    assert not any((row[0].reshape(-1, 3) == c).all(1).any() for c in REGION_COLORS.values())  # the face
    np.testing.assert_allclose(row[1].values, maps.mean(0).numpy())  # the mean's colour bar: its values


def test_without_region_masks_the_whole_mask_is_outlined_in_white():
    maps = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    row = attention_row(_image(), maps, _regions().amax(0))
    tile = row[1].rgb.reshape(-1, 3)
    assert (tile == 255).all(1).any()
    assert not any((tile == c).all(1).any() for c in REGION_COLORS.values())
    assert outline_legend(()) == "outline: the landmark mask"
    assert outline_legend(("eyes", "mouth")) == "outlines: eyes cyan, mouth magenta"


def test_the_training_grid_labels_its_columns_and_rows_and_bars_every_map():
    """Issue 30: the training overlays say which column is which, what each map's colours are worth,
    and write 'flat' on a map with no spatial preference."""
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(2))
    flat = torch.full((2, 8, 8), 1 / 64)  # attention spread evenly
    rows = [
        attention_row(_image(), maps, _regions().amax(0)),
        attention_row(_image(), flat, _regions().amax(0)),
    ]
    fig = attention_figure(rows, ["real  P(fake)=0.10", "fake  P(fake)=0.90"], "step 7")
    shown = [t.get_text().replace("\n", " ") for t in fig.texts]
    assert {"face", "mean of 2 maps", "map 0", "map 1", "step 7"} <= set(shown)
    assert {"real P(fake)=0.10", "fake P(fake)=0.90"} <= {" ".join(t.split()) for t in shown}
    bars = [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    assert len(bars) == 2 * 3  # mean and two maps per row, none for the faces
    assert bars[1].norm.vmin == pytest.approx(float(maps[0].min()))
    assert bars[1].norm.vmax == pytest.approx(float(maps[0].max()))
    assert shown.count("flat attention map: no spatial preference") == 3  # the second row's maps
    assert warnings_of(rows) == [
        f"{name}: flat attention map: no spatial preference"
        for name in ("mean attention map (2 maps)", "attention map 0", "attention map 1")
    ]
    img = render(fig)
    assert img.shape[0] > 2 * S and img.shape[1] > 4 * S
