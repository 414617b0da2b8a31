"""Continuous image coordinates.

An image of W×H square pixels occupies [-sx, sx] × [-sy, sy] with the longer side spanning [-1, 1]
(sx = W / max(W, H), sy = H / max(W, H)), so pixels stay square whatever the aspect ratio. A render
of any size samples the same rectangle at the centres of its own pixel grid: that is what makes the
stored network resolution-free. x grows to the right, y grows downwards (row order).
"""

from __future__ import annotations

import torch

from tuner_model.core.errors import ConfigError
from tuner_model.core.geometry import FULL, Crop  # defined without torch, for the API's render plans

__all__ = ["FULL", "Crop", "axis_centres", "extent", "pixel_grid", "row_coordinates"]


def extent(width: int, height: int) -> tuple[float, float]:
    """Half-extents (sx, sy) of the domain of a width×height image."""
    if width <= 0 or height <= 0:
        raise ConfigError(f"image size must be positive, got {width}x{height}")
    long = max(width, height)
    return width / long, height / long


def axis_centres(n: int, half_extent: float, lo: float = 0.0, hi: float = 1.0,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Centres of n equal cells covering the fraction [lo, hi] of [-half_extent, half_extent]."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    frac = lo + (hi - lo) * (i + 0.5) / n
    return ((2.0 * frac - 1.0) * half_extent).to(torch.float32)


def pixel_grid(out_width: int, out_height: int, native: tuple[int, int], crop: Crop = FULL,
               device: torch.device | str | None = None) -> torch.Tensor:
    """(out_height*out_width, 2) coordinates (x, y), row-major, of an output grid over `crop` of an
    image whose native size is `native` = (width, height)."""
    if out_width <= 0 or out_height <= 0:
        raise ConfigError(f"output size must be positive, got {out_width}x{out_height}")
    sx, sy = extent(*native)
    xs = axis_centres(out_width, sx, crop.left, crop.right, device)
    ys = axis_centres(out_height, sy, crop.top, crop.bottom, device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx.reshape(-1), gy.reshape(-1)), dim=1)


def row_coordinates(rows: torch.Tensor, out_width: int, out_height: int, native: tuple[int, int],
                    crop: Crop = FULL) -> torch.Tensor:
    """Coordinates for a subset of flat pixel indices of an output grid (used for tiles and batches)."""
    sx, sy = extent(*native)
    r = torch.div(rows, out_width, rounding_mode="floor")
    c = rows - r * out_width
    fx = crop.left + (crop.right - crop.left) * (c.to(torch.float64) + 0.5) / out_width
    fy = crop.top + (crop.bottom - crop.top) * (r.to(torch.float64) + 0.5) / out_height
    return torch.stack(((2 * fx - 1) * sx, (2 * fy - 1) * sy), dim=1).to(torch.float32)
