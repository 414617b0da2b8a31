"""Rendering a fitted network on any output grid, tiled so memory stays bounded."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tuner_model.core import colour as colour_mod
from tuner_model.core.coords import FULL, Crop, row_coordinates
from tuner_model.core.errors import ConfigError
from tuner_model.core.geometry import output_size
from tuner_model.core.stop import checkpoint

MAX_RENDER_PIXELS = 100_000_000


def render_size(native: tuple[int, int], width: int | None, height: int | None,
                crop: Crop = FULL) -> tuple[int, int]:
    """The output size (core/geometry.output_size: both given → as given, one → the other keeps the cropped
    region's aspect ratio, neither → the region's native size), held to the library's own limit."""
    width, height = output_size(native, width, height, crop)
    if width * height > MAX_RENDER_PIXELS:
        raise ConfigError(f"{width}x{height} exceeds the render limit of {MAX_RENDER_PIXELS} pixels")
    return width, height


@torch.no_grad()
def render_values(model: nn.Module, native: tuple[int, int], width: int, height: int, crop: Crop = FULL,
                  device: torch.device | str = "cpu", tile_pixels: int = 1 << 16) -> torch.Tensor:
    """Raw network outputs (height, width, C) at the pixel centres of a width×height grid over `crop`."""
    model = model.to(device).eval()
    n = width * height
    out: torch.Tensor | None = None
    for lo in range(0, n, tile_pixels):
        checkpoint()
        rows = torch.arange(lo, min(n, lo + tile_pixels), device=device)
        v = model(row_coordinates(rows, width, height, native, crop))
        if out is None:
            out = torch.empty((n, v.shape[1]), dtype=v.dtype, device=device)
        out[lo : lo + v.shape[0]] = v
    assert out is not None
    return out.reshape(height, width, -1)


def render(model: nn.Module, native: tuple[int, int], width: int | None = None, height: int | None = None,
           crop: Crop = FULL, colour: str = "rgb", device: torch.device | str = "cpu",
           tile_pixels: int = 1 << 16) -> np.ndarray:
    """An (H, W, C) float32 image in [0, 1] (RGB or gray) rendered from the network."""
    w, h = render_size(native, width, height, crop)
    tile = max(1024, min(tile_pixels, 1 << 22))
    v = render_values(model, native, w, h, crop, device, tile)
    rgb = colour_mod.inverse(v, colour).clamp_(0.0, 1.0)
    return rgb.cpu().numpy().astype(np.float32, copy=False)
