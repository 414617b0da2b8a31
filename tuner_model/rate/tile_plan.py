"""An encode of an image above the working size, planned before any pixel is seen (issue 28): the tile grid
(core/tiling.py), the whole blob's byte budget, each tile's share and the one plan every tile runs. Pure
(no torch), like plan.py: the API plans and admits a tiled job with it, the worker fits each tile by it (in
one batch, or one task per tile across workers) and the library's `rate/tiles.py` encodes by it.

`plan_image(request, width, height, channels)` is the entry for an image of any size: an `EncodePlan` at or
under the working size (the image is one tile, encoded as before), else a `TiledPlan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from tuner_model.core.errors import ConfigError
from tuner_model.core.tiling import TileGrid, tile_grid
from tuner_model.rate.plan import CPU_SECONDS_PER_PIXEL_NEURON, EncodePlan, first_bpp, resolve
from tuner_model.rate.request import BPP_MAX, BPP_MIN, EncodeRequest

# Bytes set aside for the version-4 container around the payloads (codec/tiled_blob.py): magic and version
# (5), seven varints of at most 3 bytes (21), the meta of two f32 fields with their tags (at most 16), the
# CRC (4), and a length varint of at most 4 bytes per tile. An upper bound, checked against
# codec.tiled_blob.overhead by a test; the planning modules cannot import the codec (it loads torch).
CONTAINER_FIXED_BYTES = 5 + 21 + 16 + 4
CONTAINER_BYTES_PER_TILE = 4
# Assembling a tiled blob: the tiles' payloads decoded, the whole image rendered once for its PSNR.
# Seconds per pixel on the 2-core CPU (a 4K render takes 6-15 s: docs/PERFORMANCE.md), an upper bound.
ASSEMBLY_SECONDS_PER_PIXEL = 2e-6


def container_reserve(count: int) -> int:
    return CONTAINER_FIXED_BYTES + CONTAINER_BYTES_PER_TILE * count


def total_budget(request: EncodeRequest, width: int, height: int) -> int:
    """Bytes the whole blob may take: the request's rate over the whole image (a quality target: the table's
    rate for it; neither: the default rate)."""
    return math.floor(first_bpp(request, width, height) * width * height / 8)


def tile_budgets(total: int, grid: TileGrid) -> list[int]:
    """Each tile's bytes out of `total` for the whole blob, the container's own bytes set aside: an equal
    share for now (allocation by the tiles' rate-distortion slopes, issue 28's item 2, is not built yet)."""
    payload = total - container_reserve(grid.count)
    if payload < grid.count:
        raise ConfigError(f"a budget of {total} bytes cannot hold {grid.count} tiles")
    return [payload // grid.count] * grid.count


@dataclass(frozen=True)
class TiledPlan:
    """An image fitted as `grid.count` tiles of one shape: every tile runs `tile` (one plan, so the tiles can
    be one batch), the whole blob within `budget` bytes."""

    request: EncodeRequest
    grid: TileGrid
    channels: int
    budget: int
    tile: EncodePlan

    @property
    def width(self) -> int:
        return self.grid.width

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def count(self) -> int:
        return self.grid.count

    @property
    def bpp(self) -> float:
        return 8 * self.budget / (self.width * self.height)

    @property
    def total_steps(self) -> int:
        """What progress counts to: every tile's training steps."""
        return self.count * self.tile.total_steps

    @property
    def batch_key(self) -> None:
        """Tiled images are never batched with other jobs: their tiles are a batch (or a group) already."""
        return None

    def tile_seconds(self, seconds_per_pixel_neuron: float = CPU_SECONDS_PER_PIXEL_NEURON) -> float:
        """One tile's fit, on one worker."""
        return self.tile.seconds(seconds_per_pixel_neuron)

    def seconds(self, seconds_per_pixel_neuron: float = CPU_SECONDS_PER_PIXEL_NEURON, parallel: int = 1) -> float:
        """Wall time with `parallel` workers fitting tiles at once: the tiles in waves of `parallel`, then the
        assembly. One tile's time is linear in its pixels, so the whole is linear in the image's."""
        waves = math.ceil(self.count / max(1, parallel))
        return waves * self.tile_seconds(seconds_per_pixel_neuron) + \
            ASSEMBLY_SECONDS_PER_PIXEL * self.width * self.height


def plan_tiles(request: EncodeRequest, grid: TileGrid, channels: int, *, seed: int = 0) -> TiledPlan:
    """The plan of `request` on `grid` (two tiles or more): each tile gets the network the table gives its
    share of the bytes, at most that share, and no quality target of its own (one attempt per tile; a quality
    target is met on average, at the table's rate for it)."""
    total = total_budget(request, grid.width, grid.height)
    share = min(tile_budgets(total, grid))
    tw, th = grid.tile_width, grid.tile_height
    rate = min(BPP_MAX, max(BPP_MIN, first_bpp(request, grid.width, grid.height)))
    tile_request = EncodeRequest(bpp=rate, steps=request.steps, effort=request.effort)
    tile = resolve(tile_request, tw, th, channels, seed=seed, bpp=8 * share / (tw * th))
    return TiledPlan(request=request, grid=grid, channels=channels, budget=total,
                     tile=replace(tile, budget=min(tile.budget, share)))


def plan_image(request: EncodeRequest, width: int, height: int, channels: int, *, seed: int = 0,
               working: tuple[int, int] | None = None) -> EncodePlan | TiledPlan:
    """The plan for an image of any size: one network at or under the working size (core/tiling.py), else
    tiles."""
    grid = tile_grid(width, height, working)
    if grid.count == 1:
        return resolve(request, width, height, channels, seed=seed)
    return plan_tiles(request, grid, channels, seed=seed)


__all__ = ["TiledPlan", "container_reserve", "plan_image", "plan_tiles", "tile_budgets", "total_budget"]
