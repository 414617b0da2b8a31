"""Issue 28's render-by-tile benchmark (tuner_model/bench/tiled_render.py), its geometry only (the benchmark
itself encodes a 3-megapixel image: minutes): the 512×512 box sits over a corner where four tiles meet, and the
tiles it names are those render/tiled.py evaluates for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tuner_model.bench.tiled_render import LARGE, corner_box, meeting_tiles
from tuner_model.core.coords import Crop
from tuner_model.core.tiling import tile_grid
from tuner_model.models import ModelConfig, build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.models.tiled import TiledImage
from tuner_model.render import tiled as tiled_render


def test_the_box_is_over_a_corner_of_four_tiles() -> None:
    grid = tile_grid(*LARGE)
    box = corner_box(grid)
    l, t, r, b = box
    assert (r - l, b - t) == (512, 512) and l >= 0 and t >= 0 and r <= grid.width and b <= grid.height
    assert len(meeting_tiles(grid, box)) == 4


def test_meeting_tiles_are_those_render_tiled_evaluates(monkeypatch: pytest.MonkeyPatch) -> None:
    grid = tile_grid(200, 150, working=(72, 56), overlap=8)
    config = ModelConfig(input_width=8, hidden=(8,), bandlimit=6, block_limit=2, freq_seed=1)
    tiles = [FittedImage(config, grid.tile_width, grid.tile_height, build_model(config, seed=k).eval(), "rgb",
                         meta={"index": k}) for k in range(grid.count)]
    image = TiledImage(grid, tiles)
    seen: list[int] = []
    real = tiled_render.tile_values

    def counting(tile: FittedImage, *args, **kwargs) -> torch.Tensor:  # noqa: ANN002, ANN003
        seen.append(tile.meta["index"])
        return real(tile, *args, **kwargs)

    monkeypatch.setattr(tiled_render, "tile_values", counting)
    for box in (corner_box(grid, 40), (0, 0, 30, 20), (100, 10, 180, 140)):
        seen.clear()
        l, t, r, b = box
        out = tiled_render.render_tiled(image, r - l, b - t, Crop(l / 200, t / 150, r / 200, b / 150))
        assert out.shape == (b - t, r - l, 3) and np.isfinite(out).all()
        assert sorted(seen) == meeting_tiles(grid, box), box
