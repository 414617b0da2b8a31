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
from typing import Literal

from tuner_model.core.errors import ConfigError
from tuner_model.core.tiling import TileGrid, tile_grid
from tuner_model.rate.plan import CPU_SECONDS_PER_PIXEL_NEURON, MIN_PSNR_MODE_BYTES, EncodePlan, first_bpp, resolve
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
# The least a tile's payload may get from an allocation: a header and a few dozen parameters (plan.py's
# MIN_PSNR_MODE_BYTES).
MIN_TILE_BYTES = MIN_PSNR_MODE_BYTES


def container_reserve(count: int) -> int:
    return CONTAINER_FIXED_BYTES + CONTAINER_BYTES_PER_TILE * count


def total_budget(request: EncodeRequest, width: int, height: int) -> int:
    """Bytes the whole blob may take: the request's rate over the whole image (a quality target: the table's
    rate for it; neither: the default rate)."""
    return math.floor(first_bpp(request, width, height) * width * height / 8)


def tile_budgets(total: int, grid: TileGrid) -> list[int]:
    """Each tile's equal share of `total` bytes for the whole blob, the container's own bytes set aside (the
    shares before the pixels are seen, and the `equal` allocation)."""
    payload = total - container_reserve(grid.count)
    if payload < grid.count:
        raise ConfigError(f"a budget of {total} bytes cannot hold {grid.count} tiles")
    return [payload // grid.count] * grid.count


Allocation = Literal["slopes", "equal"]


@dataclass(frozen=True)
class TiledPlan:
    """An image fitted as `grid.count` tiles of one shape within `budget` bytes for the whole blob. `tile` is
    the plan of an equal share; `budgets`, once the pixels are seen, each tile's own share (rate/allocate.py,
    by the tiles' rate-distortion slopes, when `allocation` says so), and `tile_plan(k)` tile k's plan."""

    request: EncodeRequest
    grid: TileGrid
    channels: int
    budget: int
    tile: EncodePlan
    allocation: Allocation = "slopes"
    budgets: tuple[int, ...] | None = None
    seed: int = 0

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
    def payload(self) -> int:
        """The bytes the tiles' payloads may take together: the budget less the container's reserve."""
        return self.budget - container_reserve(self.count)

    @property
    def total_steps(self) -> int:
        """What progress counts to: every tile's training steps."""
        return self.count * self.tile.total_steps

    @property
    def batch_key(self) -> None:
        """Tiled images are never batched with other jobs: their tiles are a batch (or a group) already."""
        return None

    def with_budgets(self, budgets: list[int]) -> TiledPlan:
        """This plan with each tile's share of the payload (at least MIN_TILE_BYTES each, in all at most the
        payload)."""
        if len(budgets) != self.count or sum(budgets) > self.payload or min(budgets) < MIN_TILE_BYTES:
            raise ConfigError(f"tile budgets {budgets} do not fit {self.count} tiles in {self.payload} bytes")
        return replace(self, budgets=tuple(budgets))

    def tile_plan(self, k: int) -> EncodePlan:
        """Tile k's plan: the equal share's, or one at tile k's own budget."""
        if self.budgets is None or self.budgets[k] == self.tile.budget:
            return self.tile
        return _share_plan(self.request, self.grid, self.channels, self.budgets[k], self.seed)

    def tile_seconds(self, seconds_per_pixel_neuron: float = CPU_SECONDS_PER_PIXEL_NEURON) -> float:
        """One tile's fit, on one worker (an equal share's: the tiles' networks are near it on average)."""
        return self.tile.seconds(seconds_per_pixel_neuron)

    def seconds(self, seconds_per_pixel_neuron: float = CPU_SECONDS_PER_PIXEL_NEURON, parallel: int = 1) -> float:
        """Wall time with `parallel` workers fitting tiles at once: the tiles in waves of `parallel`, then the
        assembly. One tile's time is linear in its pixels, so the whole is linear in the image's."""
        waves = math.ceil(self.count / max(1, parallel))
        return waves * self.tile_seconds(seconds_per_pixel_neuron) + \
            ASSEMBLY_SECONDS_PER_PIXEL * self.width * self.height


def _share_plan(request: EncodeRequest, grid: TileGrid, channels: int, share: int, seed: int) -> EncodePlan:
    """A tile's plan for `share` bytes: the network the table gives that rate, at most `share` bytes, no
    quality target of its own (one attempt per tile)."""
    tw, th = grid.tile_width, grid.tile_height
    rate = 8 * share / (tw * th)
    tile_request = EncodeRequest(bpp=min(BPP_MAX, max(BPP_MIN, rate)), steps=request.steps, effort=request.effort)
    tile = resolve(tile_request, tw, th, channels, seed=seed, bpp=rate)
    return replace(tile, budget=min(tile.budget, share))


def plan_tiles(request: EncodeRequest, grid: TileGrid, channels: int, *, seed: int = 0,
               allocation: Allocation = "slopes") -> TiledPlan:
    """The plan of `request` on `grid` (two tiles or more): the whole image's budget, and an equal share's
    plan for every tile until the pixels give each its own (`with_budgets`). A quality target is met on
    average, at the table's rate for it."""
    total = total_budget(request, grid.width, grid.height)
    share = min(tile_budgets(total, grid))
    return TiledPlan(request=request, grid=grid, channels=channels, budget=total, allocation=allocation,
                     tile=_share_plan(request, grid, channels, share, seed), seed=seed)


def plan_image(request: EncodeRequest, width: int, height: int, channels: int, *, seed: int = 0,
               working: tuple[int, int] | None = None, allocation: Allocation = "slopes") -> EncodePlan | TiledPlan:
    """The plan for an image of any size: one network at or under the working size (core/tiling.py), else
    tiles."""
    grid = tile_grid(width, height, working)
    if grid.count == 1:
        return resolve(request, width, height, channels, seed=seed)
    return plan_tiles(request, grid, channels, seed=seed, allocation=allocation)


__all__ = ["Allocation", "TiledPlan", "container_reserve", "plan_image", "plan_tiles", "tile_budgets", "total_budget"]
