"""Issue 28, the tiling geometry (core/tiling.py, no torch): an image above the working size is cut into equal
tiles that overlap and end at the image's edges, one at or under it stays whole, and the blend weights are a
smooth partition of unity."""

from __future__ import annotations

import numpy as np
import pytest

from tuner_model.core.errors import ConfigError
from tuner_model.core.tiling import OVERLAP, WORKING_SIZE, Axis, TileGrid, tile_grid


@pytest.mark.parametrize("size", [(768, 512), (512, 768), (640, 480), (1, 1), (512, 512)])
def test_at_or_under_the_working_size_is_one_tile(size: tuple[int, int]) -> None:
    grid = tile_grid(*size)
    assert grid.count == 1 and (grid.tile_width, grid.tile_height) == size


@pytest.mark.parametrize("size", [(769, 512), (768, 513), (4000, 3000), (3000, 4000), (1000, 300), (300, 1000),
                                  (2000, 2000), (6000, 530)])
def test_tiles_are_equal_within_the_working_size_and_cover_with_overlap(size: tuple[int, int]) -> None:
    w, h = size
    grid = tile_grid(w, h)
    grid.check()
    assert grid.count >= 2
    long, short = WORKING_SIZE
    assert max(grid.tile_width, grid.tile_height) <= long and min(grid.tile_width, grid.tile_height) <= short
    most = (long, short) if w >= h else (short, long)
    for axis, most_pixels in zip((grid.x, grid.y), most, strict=True):
        s = axis.starts()
        assert s[0] == 0 and s[-1] + axis.tile == axis.size  # the last tile ends at the edge
        if axis.count > 1:
            overlaps = [a + axis.tile - b for a, b in zip(s[:-1], s[1:], strict=True)]
            assert all(OVERLAP <= o < OVERLAP + axis.count for o in overlaps), overlaps
        # the fewest tiles: one fewer, each within the working size, could not cover the axis with the overlap
        assert axis.count == 1 or (axis.count - 1) * (most_pixels - OVERLAP) + OVERLAP < axis.size


def test_cut_gives_the_image_pixels_of_each_box() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((50, 90, 3), dtype=np.float32)
    grid = tile_grid(90, 50, working=(40, 30), overlap=6)
    tiles = grid.cut(image)
    assert len(tiles) == grid.count == grid.nx * grid.ny
    for (left, top), tile in zip(grid.origins(), tiles, strict=True):
        assert tile.shape == (grid.tile_height, grid.tile_width, 3)
        np.testing.assert_array_equal(tile, image[top : top + grid.tile_height, left : left + grid.tile_width])


@pytest.mark.parametrize("axis", [Axis.plan(2000, 768), Axis.plan(90, 40, 6), Axis.plan(1600, 300, 31)])
def test_weights_are_a_smooth_partition_of_unity(axis: Axis) -> None:
    u = np.linspace(0.0, axis.size, 200_001)
    weights = np.stack([axis.weights(i, u) for i in range(axis.count)])
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-12)
    assert weights.min() >= 0.0
    for i in range(axis.count):
        lo, hi = axis.support(i)
        start = axis.starts()[i]
        assert start <= lo and hi <= start + axis.tile  # a tile weighs only inside its own box
        outside = (u < lo) | (u > hi) | ((u == lo) & (i > 0)) | ((u == hi) & (i < axis.count - 1))
        assert np.all(weights[i][outside] == 0.0)
    # C¹: the slope is bounded (π/2 per window width) and changes gradually, with no step anywhere
    du = u[1] - u[0]
    slope = np.diff(weights, axis=1) / du
    assert np.abs(slope).max() <= np.pi / (2 * axis.overlap) + 1e-6
    assert np.abs(np.diff(slope, axis=1)).max() < 1e-3


@pytest.mark.parametrize("grid", [
    TileGrid(1000, 500, 2, 1, 600, 500, 16),  # not the rule's tile size
    TileGrid(1000, 500, 2, 1, 508, 400, 16),  # one tile row that does not span the height
    TileGrid(100, 50, 30, 1, 18, 50, 15),  # windows meet
    TileGrid(100, 50, 2, 1, 50, 50, 0),  # tiles without overlap
    TileGrid(100, 50, 1, 1, 99, 50, 16),
    TileGrid(100, 50, 101, 1, 1, 50, 1),
])
def test_inconsistent_grids_are_refused(grid: TileGrid) -> None:
    with pytest.raises(ConfigError):
        grid.check()


def test_working_size_must_leave_room_for_the_overlap() -> None:
    with pytest.raises(ConfigError):
        tile_grid(100, 100, working=(30, 20), overlap=16)
