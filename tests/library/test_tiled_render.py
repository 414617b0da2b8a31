"""Issue 28, rendering an image fitted as tiles (render/tiled.py) with real TUNER networks (random weights, no
fit: the renderer's contract does not depend on them): a crop's render is the crop of the full render at
native size and upscaled, a tile whose blend support misses the region is never evaluated, the tiles blend
with no seam at any size, and render_image/measure_psnr take a TiledImage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tuner_model.core.coords import Crop
from tuner_model.core.metrics import psnr
from tuner_model.core.tiling import tile_grid
from tuner_model.models import ModelConfig, build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.models.tiled import TiledImage
from tuner_model.render import tiled as tiled_render
from tuner_model.render.fitted import measure_psnr, render_image

# 72×48 on a 2 × 2 grid of 40×28 tiles, 8 pixels apart.
GRID = tile_grid(72, 48, working=(40, 32), overlap=8)
CONFIG = ModelConfig(input_width=24, hidden=(16,), bandlimit=12, block_limit=4, freq_seed=3)


def _tiled(colour: str = "rgb") -> TiledImage:
    tiles = []
    for k in range(GRID.count):
        model = build_model(CONFIG, seed=10 + k).eval()
        tiles.append(FittedImage(CONFIG, GRID.tile_width, GRID.tile_height, model, colour))
    return TiledImage(GRID, tiles)


def _constant(values: list[float]) -> TiledImage:
    """Tiles that each render one constant grey (output weights zero, biases the value)."""
    image = _tiled()
    for tile, v in zip(image.tiles, values, strict=True):
        with torch.no_grad():
            tile.model.out.weight.zero_()
            tile.model.out.bias.fill_(v)
    return image


def test_grid_is_two_by_two() -> None:
    assert (GRID.nx, GRID.ny, GRID.tile_width, GRID.tile_height) == (2, 2, 40, 28)


@pytest.mark.parametrize("colour", ["rgb", "ycbcr"])
@pytest.mark.parametrize("scale", [1, 3])
def test_a_crop_renders_as_the_crop_of_the_full_render(colour: str, scale: int) -> None:
    image = _tiled(colour)
    full = render_image(image, 72 * scale, 48 * scale)
    for l, t, r, b in ((10, 6, 50, 30), (0, 0, 20, 12), (30, 20, 72, 48), (33, 0, 41, 48)):
        crop = Crop(l / 72, t / 48, r / 72, b / 48)
        part = render_image(image, (r - l) * scale, (b - t) * scale, crop)
        np.testing.assert_allclose(part, full[t * scale : b * scale, l * scale : r * scale], atol=1e-5)


def _count_evaluations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Records each tile evaluation: (tile index, its x positions, its y positions), the real values returned."""
    calls: list[tuple[int, np.ndarray, np.ndarray]] = []
    real = tiled_render.tile_values

    def counting(tile: FittedImage, px: np.ndarray, py: np.ndarray, *args, **kwargs) -> torch.Tensor:  # noqa: ANN002, ANN003
        calls.append((tile.meta["index"], px.copy(), py.copy()))
        return real(tile, px, py, *args, **kwargs)

    monkeypatch.setattr(tiled_render, "tile_values", counting)
    return calls


@pytest.mark.parametrize("box,expected", [
    ((0, 0, 20, 12), {0}),  # inside tile 0, away from every blend window
    ((50, 30, 72, 48), {3}),
    ((30, 2, 42, 10), {0, 1}),  # across the vertical seam only
    ((0, 20, 10, 30), {0, 2}),  # across the horizontal seam only
    ((30, 20, 42, 30), {0, 1, 2, 3}),
])
def test_a_tile_outside_the_region_is_never_evaluated(monkeypatch: pytest.MonkeyPatch, box: tuple[int, ...],
                                                       expected: set[int]) -> None:
    image = _tiled()
    for k, tile in enumerate(image.tiles):
        tile.meta["index"] = k
    calls = _count_evaluations(monkeypatch)
    l, t, r, b = box
    render_image(image, 2 * (r - l), 2 * (b - t), Crop(l / 72, t / 48, r / 72, b / 48))
    assert sorted(k for k, _, _ in calls) == sorted(expected)  # each tile at most once
    for k, px, py in calls:  # and only at positions inside its own box
        assert px.min() > 0 and px.max() < GRID.tile_width and py.min() > 0 and py.max() < GRID.tile_height, k


def test_constant_tiles_blend_to_the_constant_at_any_size_and_crop() -> None:
    # The weights sum to one at every output pixel, whatever the size or crop.
    image = _constant([0.4] * GRID.count)
    for size, crop in (((72, 48), Crop(0, 0, 1, 1)), ((131, 17), Crop(0.2, 0.3, 0.9, 0.6)),
                       ((5, 300), Crop(0.5, 0, 0.55, 1))):
        np.testing.assert_allclose(render_image(image, *size, crop), 0.4, atol=1e-6)


def _largest_step(image: TiledImage, zoom: int, seam: float) -> float:
    """The largest difference between neighbouring output columns in a band around the vertical seam at
    `seam` (pixels), rendered `zoom` times the native density."""
    crop = Crop((seam - 12) / 72, 0.1, (seam + 12) / 72, 0.9)
    out = render_image(image, 24 * zoom, None, crop)
    return float(np.abs(np.diff(out, axis=1)).max())


def test_no_seam_at_any_size() -> None:
    # Tiles of very different greys: a seam would be a step that no zoom makes smaller; the blend's steps
    # shrink as the columns get denser (the ramp is continuous, of bounded slope).
    image = _constant([0.1, 0.9, 0.1, 0.9])
    seam = sum(GRID.x.windows()[0]) / 2
    steps = [_largest_step(image, z, seam) for z in (1, 4, 16)]
    assert steps[0] < 0.8 * np.pi / (2 * GRID.overlap) + 1e-3  # the ramp's slope, not a jump of 0.8
    assert steps[1] < steps[0] / 3 and steps[2] < steps[1] / 3, steps
    # and with real (random) networks: the steps shrink with the zoom as the networks' own variation does
    image = _tiled()
    steps = [_largest_step(image, z, seam) for z in (2, 16)]
    assert steps[1] < steps[0] / 4, steps


def test_render_image_and_measure_psnr_take_a_tiled_image() -> None:
    image = _tiled()
    full = render_image(image)
    assert full.shape == (48, 72, 3) and full.dtype == np.float32
    assert measure_psnr(image, full) == psnr(full, full)
    assert render_image(image, 36).shape == (24, 36, 3)
    direct = tiled_render.render_tiled(image, resample=False)
    np.testing.assert_allclose(full, direct, atol=1e-5)
