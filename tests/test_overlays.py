"""The attention overlays: every map at its own resolution (one colour per cell, the grid faint) and
each landmark region outlined in its own colour."""

from __future__ import annotations

import numpy as np
import torch

from lmguide.viz.overlays import REGION_COLORS, attention_panel, grid_overlay

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


def test_the_panel_outlines_each_region_in_its_colour_on_every_map():
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    panel = attention_panel(
        _image(), maps, _regions().amax(0), region_masks=_regions(), regions=("eyes", "nose", "mouth")
    )
    assert panel.shape == (S, S * 4, 3)  # face | mean | 2 heads
    for k in range(1, 4):  # every map tile holds every region's outline colour
        tile = panel[:, k * S : (k + 1) * S].reshape(-1, 3)
        for color in REGION_COLORS.values():
            assert (tile == color).all(1).any(), (k, color)
    assert not any(
        (panel[:, :S].reshape(-1, 3) == c).all(1).any() for c in REGION_COLORS.values()
    )  # the face


def test_without_region_masks_the_whole_mask_is_outlined_in_white():
    maps = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    panel = attention_panel(_image(), maps, _regions().amax(0), title="real")
    assert panel.shape == (18 + S, S * 3, 3)  # the title bar, then face | mean | one head
    tile = panel[18:, S : 2 * S].reshape(-1, 3)
    assert (tile == 255).all(1).any()
    assert not any((tile == c).all(1).any() for c in REGION_COLORS.values())
