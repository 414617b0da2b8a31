"""Cutting a large image into equal, overlapping tiles, and the weights that blend them back (issue 28).

Along each axis an image of `size` pixels is cut into `count` tiles of `tile` pixels. Tile i starts at
min(i·(tile − overlap), size − tile): neighbours overlap by `overlap` pixels, and the last tile is shifted to
end at the image edge, so every tile has the same shape (same-shape tiles are one batch for the encoder).
The tile size is the smallest that covers the image with those overlaps,

    tile = ⌈(size + (count − 1)·overlap) / count⌉,

so the last overlap is `overlap` plus fewer than `count` pixels, and a grid is fully described by
(size, count, overlap): the decoder checks a stored tile size against this rule.

Blending: inside each actual overlap a window of `overlap` pixels, centred on it, carries a raised-cosine
ramp r(t) = (1 − cos πt)/2, t ∈ [0, 1]. The right tile's weight is r, the left tile's 1 − r (r(t) + r(1 − t)
= 1), so at every position the weights sum to one along each axis; the 2-D weight is the product of the
axes' weights (separable), so the tiles' weights sum to one everywhere. The ramp is C¹ (zero slope at both
ends), and it is a function of the continuous position, not of a pixel index: every render size and crop
samples the same blended image, with no seam.

Pure (numpy, no torch): the API may plan with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tuner_model.core.errors import ConfigError

# The largest tile the encoder fits as one network: (longer side, shorter side), oriented like the image.
# Kodak's size, where the rate-control table was measured, and the largest at which a tile's fit at the
# default effort stays within the workers' time limit with the estimate's safety factor on the 2-core CPU
# (1351 s of 3000; 1024x683 would take 3193). Per byte, one network at this size and its 2 x 2 smaller tiles
# (bytes by slopes) were even on 4 Kodak images at effort 1 (docs/PERFORMANCE.md, "Large photos as tiles").
WORKING_SIZE = (768, 512)
# Pixels shared by neighbouring tiles; the blend window is this wide. A few pixels suffice for a
# smooth blend, and every one of them is fitted twice.
OVERLAP = 16
MAX_OVERLAP = 256


def _ramp(t: np.ndarray) -> np.ndarray:
    """The raised cosine: 0 at t ≤ 0, 1 at t ≥ 1, r(t) + r(1 − t) = 1."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))


@dataclass(frozen=True)
class Axis:
    """One axis of a tile grid: `count` tiles of `tile` pixels over `size` pixels, `overlap` apart."""

    size: int
    count: int
    tile: int
    overlap: int

    @staticmethod
    def plan(size: int, most: int, overlap: int = OVERLAP) -> Axis:
        """The fewest tiles of at most `most` pixels that cover `size` pixels with the overlap."""
        if size <= most:
            return Axis(size, 1, size, overlap)
        count = math.ceil((size - overlap) / (most - overlap))
        return Axis(size, count, math.ceil((size + (count - 1) * overlap) / count), overlap)

    def check(self) -> None:
        """Raises ConfigError unless this axis is one the rule above makes, with blend windows that do not
        meet (what a decoder requires of a stored grid)."""
        if not (1 <= self.count <= self.size and 1 <= self.tile <= self.size and 0 <= self.overlap <= MAX_OVERLAP):
            raise ConfigError("tile grid: counts or sizes out of range")
        if self.count == 1:
            if self.tile != self.size:
                raise ConfigError("tile grid: a single tile must span the image")
            return
        if self.overlap < 1 or self.tile != math.ceil((self.size + (self.count - 1) * self.overlap) / self.count):
            raise ConfigError("tile grid: tile size inconsistent with the image size")
        starts = self.starts()
        windows = self.windows()
        edges = [0.0] + [x for w in windows for x in w] + [float(self.size)]
        if any(b <= a for a, b in zip(starts[:-1], starts[1:], strict=True)) or any(
                b < a for a, b in zip(edges[:-1], edges[1:], strict=True)):
            raise ConfigError("tile grid: tiles too small for their overlap")

    def starts(self) -> list[int]:
        stride = self.tile - self.overlap
        return [min(i * stride, self.size - self.tile) for i in range(self.count)]

    def windows(self) -> list[tuple[float, float]]:
        """The blend window between tile i and i + 1, for each i: `overlap` pixels centred in their overlap."""
        s = self.starts()
        out = []
        for i in range(self.count - 1):
            centre = (s[i + 1] + s[i] + self.tile) / 2
            out.append((centre - self.overlap / 2, centre + self.overlap / 2))
        return out

    def support(self, i: int) -> tuple[float, float]:
        """Where tile i's weight is positive: (lo, hi) in pixels, open (the image's edges for the end tiles)."""
        w = self.windows()
        return (w[i - 1][0] if i > 0 else 0.0, w[i][1] if i < self.count - 1 else float(self.size))

    def weights(self, i: int, u: np.ndarray) -> np.ndarray:
        """Tile i's blend weight at positions `u` (continuous pixels from the image's left or top edge)."""
        w = self.windows()
        out = np.ones_like(u, dtype=np.float64)
        if i > 0:
            lo, hi = w[i - 1]
            out *= _ramp((u - lo) / (hi - lo))
        if i < self.count - 1:
            lo, hi = w[i]
            out *= 1.0 - _ramp((u - lo) / (hi - lo))
        return out


@dataclass(frozen=True)
class TileGrid:
    """nx × ny tiles of tile_width × tile_height over a width × height image, row-major (tile k is column
    k % nx of row k // nx)."""

    width: int
    height: int
    nx: int
    ny: int
    tile_width: int
    tile_height: int
    overlap: int

    @property
    def x(self) -> Axis:
        return Axis(self.width, self.nx, self.tile_width, self.overlap)

    @property
    def y(self) -> Axis:
        return Axis(self.height, self.ny, self.tile_height, self.overlap)

    @property
    def count(self) -> int:
        return self.nx * self.ny

    def check(self) -> None:
        self.x.check()
        self.y.check()

    def origins(self) -> list[tuple[int, int]]:
        """Each tile's (left, top) in pixels, row-major."""
        return [(left, top) for top in self.y.starts() for left in self.x.starts()]

    def cut(self, image: np.ndarray) -> list[np.ndarray]:
        """The tiles of an (H, W, C) image, row-major, each (tile_height, tile_width, C) and contiguous."""
        return [np.ascontiguousarray(view) for view in self.views(image)]

    def views(self, image: np.ndarray) -> list[np.ndarray]:
        """The tiles of an (H, W, C) image as views into it (no copy), row-major."""
        if image.shape[:2] != (self.height, self.width):
            raise ConfigError(f"the image is not {self.width}x{self.height}")
        return [image[t : t + self.tile_height, l : l + self.tile_width] for l, t in self.origins()]

    def tile(self, image: np.ndarray, k: int) -> np.ndarray:
        """Tile k of an (H, W, C) image, (tile_height, tile_width, C) and contiguous."""
        return np.ascontiguousarray(self.views(image)[k])


def tile_grid(width: int, height: int, working: tuple[int, int] | None = None, overlap: int = OVERLAP) -> TileGrid:
    """The grid an image is encoded on: one tile (the image itself) at or under the working size (longer,
    shorter side, oriented like the image), else the fewest equal tiles within it."""
    long, short = working or WORKING_SIZE
    most_w, most_h = (long, short) if width >= height else (short, long)
    if min(most_w, most_h) <= 2 * overlap:
        raise ConfigError(f"the working size {long}x{short} is too small for an overlap of {overlap}")
    ax, ay = Axis.plan(width, most_w, overlap), Axis.plan(height, most_h, overlap)
    return TileGrid(width, height, ax.count, ay.count, ax.tile, ay.tile, overlap)


__all__ = ["MAX_OVERLAP", "OVERLAP", "WORKING_SIZE", "Axis", "TileGrid", "tile_grid"]
