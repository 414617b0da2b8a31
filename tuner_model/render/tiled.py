"""Rendering an image fitted as tiles (issue 28), tile by tile.

An output pixel j of a width-w render over the crop [l, r] of a W-pixel image sits at the continuous
position u_j = (l + (r − l)·(j + ½)/w)·W pixels from the image's left edge (the pixel-centre rule of
core/coords.py, in pixels). A tile whose box starts at pixel s and spans T pixels sees it at its own
coordinate x_j = (2(u_j − s)/T − 1)·ex (ex its half-extent): the same point of the same continuous image it
was fitted to. So each tile is evaluated, separably (render/separable.grid_values, or resampled for an
upscale as render/fast.py does), on exactly the output's pixel centres inside its blend support — the
region where its weight (core/tiling.py) is positive, inside its box — and its values, times the weights, are
summed: the weights add up to one everywhere, so the overlaps blend without a seam at any size or crop. A
tile whose support misses the requested region is never evaluated.
"""

from __future__ import annotations

import numpy as np
import torch

from tuner_model.core import colour as colour_mod
from tuner_model.core.coords import FULL, Crop, extent
from tuner_model.core.stop import checkpoint
from tuner_model.models.fitted import FittedImage
from tuner_model.models.tiled import TiledImage
from tuner_model.render.direct import render_size
from tuner_model.render.resample import resampled
from tuner_model.render.separable import grid_values, supports

_DIRECT_CHUNK = 1 << 16  # coordinates per call of a network that has no separable path


def pixel_positions(n: int, size: int, lo: float, hi: float) -> np.ndarray:
    """The centres of n output pixels over the fraction [lo, hi] of an axis of `size` pixels, in pixels."""
    return (lo + (hi - lo) * (np.arange(n, dtype=np.float64) + 0.5) / n) * size


def _inside(u: np.ndarray, support: tuple[float, float]) -> slice:
    """The (ascending) positions strictly inside the open interval `support`, as a slice."""
    return slice(int(np.searchsorted(u, support[0], "right")), int(np.searchsorted(u, support[1], "left")))


@torch.no_grad()
def tile_values(tile: FittedImage, px: np.ndarray, py: np.ndarray, spacing: tuple[float, float],
                device: torch.device | str = "cpu", resample: bool = True) -> torch.Tensor:
    """A tile's RGB (or gray) values, unclamped, (len(py), len(px), C) float32 on the CPU, at positions `px`,
    `py` in pixels from the tile's left and top edges; `spacing` is the output's pixel pitch in pixels (an
    upscale is resampled from a coarser exact grid when the network passes its probe)."""
    ex, ey = extent(tile.width, tile.height)
    xs = torch.from_numpy((2.0 * px / tile.width - 1.0) * ex)
    ys = torch.from_numpy((2.0 * py / tile.height - 1.0) * ey)
    model = tile.model
    if supports(model) and torch.device(device).type == "cpu":
        model = model.cpu().eval()
        steps = (2.0 * ex * spacing[0] / tile.width, 2.0 * ey * spacing[1] / tile.height)
        values = resampled(model, tile.native, xs, ys, steps, tile.colour) if resample else None
        if values is None:
            values = grid_values(model, xs, ys)
    else:  # direct evaluation, any network, any device
        model = model.to(device).eval()
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack((gx.reshape(-1), gy.reshape(-1)), dim=1).to(torch.float32).to(device)
        values = torch.cat([model(coords[a : a + _DIRECT_CHUNK]).cpu()
                            for a in range(0, coords.shape[0], _DIRECT_CHUNK)]).reshape(len(py), len(px), -1)
    return colour_mod.inverse(values.float(), tile.colour)


@torch.no_grad()
def render_tiled(image: TiledImage, width: int | None = None, height: int | None = None, crop: Crop = FULL,
                 device: torch.device | str = "cpu", resample: bool = True) -> np.ndarray:
    """render_image's contract for a TiledImage: an (H, W, C) float32 image in [0, 1]."""
    w, h = render_size(image.native, width, height, crop)
    grid = image.grid
    us = pixel_positions(w, grid.width, crop.left, crop.right)
    vs = pixel_positions(h, grid.height, crop.top, crop.bottom)
    spacing = (grid.width * (crop.right - crop.left) / w, grid.height * (crop.bottom - crop.top) / h)
    ax, ay = grid.x, grid.y
    columns = [_inside(us, ax.support(i)) for i in range(grid.nx)]  # each tile column's output pixels
    rows_of = [_inside(vs, ay.support(j)) for j in range(grid.ny)]
    out = torch.zeros((h, w, image.channels), dtype=torch.float32)
    for k, ((left, top), tile) in enumerate(zip(grid.origins(), image.tiles, strict=True)):
        i, j = k % grid.nx, k // grid.nx
        cols, rows = columns[i], rows_of[j]
        if cols.start >= cols.stop or rows.start >= rows.stop:
            continue  # this tile has no weight in the region: never evaluated
        checkpoint()
        values = tile_values(tile, us[cols] - left, vs[rows] - top, spacing, device, resample)
        weight = np.outer(ay.weights(j, vs[rows]), ax.weights(i, us[cols])).astype(np.float32)
        out[rows, cols] += values * torch.from_numpy(weight)[:, :, None]
    return out.clamp_(0.0, 1.0).numpy()


__all__ = ["pixel_positions", "render_tiled", "tile_values"]
