"""Encoding an image above the working size as tiles (issue 28): `encode_any` is the library's entry for an
image of any size.

An image at or under the working size (core/tiling.WORKING_SIZE) is one tile and goes through `encode`
unchanged, byte for byte (a version-2 blob, no container). A larger one is cut into equal overlapping tiles
(core/tiling.tile_grid), and the tiles, all of one shape, are encoded as one batch of the one encoder
(rate/encode.iter_encode) with one plan; their version-2 blobs go into a version-4 container
(codec/tiled_blob.py).

The byte budget is the whole image's: bpp·W·H/8 bytes (a quality target: the table's rate for it, over the
whole image), less the container's own bytes, split across the tiles by `tile_budgets` and never exceeded
(each tile's level search bounds its real blob size). For now every tile gets an equal share, so one plan
serves them all; allocating by the tiles' rate–distortion slopes is a later step, and `tile_budgets` is
where it goes. A quality target is likewise met on average only (the tiles are encoded at the table's rate
for it, and the blob's PSNR is measured on the blended image): per-tile quality targets are a later step.

Progress is the mean of the tiles' (one Progress, as `encode` reports); stopping is the caller's stop check
(core/stop.py), as for any encode: a cancelled tile cancels the image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from tuner_model.codec.tiled_blob import encode_tiled_blob, overhead
from tuner_model.core.errors import ConfigError, TunerError
from tuner_model.core.progress import Progress
from tuner_model.core.tiling import TileGrid, tile_grid
from tuner_model.models.fitted import FittedImage
from tuner_model.models.tiled import TiledImage
from tuner_model.rate.encode import encode, iter_encode
from tuner_model.rate.plan import EncodePlan, first_bpp, resolve
from tuner_model.rate.request import BPP_MAX, BPP_MIN, EncodeRequest, EncodeSettings
from tuner_model.render.fitted import measure_psnr

# The container's meta as encode_tiles writes it: its size (both values f32) is what `overhead` reserves.
_META_SHAPE = {"psnr": 0.0, "seconds": 0.0}


def encode_any(image: np.ndarray, settings: EncodeSettings = EncodeSettings(),
               progress: Callable[[Progress], None] | None = None,
               working: tuple[int, int] | None = None) -> tuple[FittedImage | TiledImage, bytes]:
    """An (H, W, C) image in [0, 1] as `settings` ask: `encode` at or under the working size (`working`,
    default core/tiling.WORKING_SIZE), else `encode_tiles`."""
    h, w, _ = image.shape
    grid = tile_grid(w, h, working)
    if grid.count == 1:
        return encode(image, settings, progress)
    return encode_tiles(image, grid, settings, progress)


def total_budget(request: EncodeRequest, width: int, height: int) -> int:
    """Bytes the whole blob may take: the request's rate over the whole image (a quality target: the table's
    rate for it; neither: the default rate)."""
    return math.floor(first_bpp(request, width, height) * width * height / 8)


def tile_budgets(total: int, grid: TileGrid) -> list[int]:
    """Each tile's bytes out of `total` for the whole blob, the container's own bytes set aside: for now an
    equal share. The seam for rate allocation by the tiles' rate–distortion slopes (a later step: a tile
    whose PSNR rises faster per byte gets more), which then also needs a plan, or a finish, per budget."""
    payload = total - overhead(grid, _META_SHAPE, total)
    if payload < grid.count:
        raise ConfigError(f"a budget of {total} bytes cannot hold {grid.count} tiles")
    return [payload // grid.count] * grid.count


def tile_plan(settings: EncodeSettings, grid: TileGrid, channels: int, budget: int) -> EncodePlan:
    """One plan for every tile: the network the table gives the tile's share of the bytes, at most `budget`
    bytes per tile, no quality target of its own (one attempt per tile)."""
    rate = min(BPP_MAX, max(BPP_MIN, first_bpp(settings, grid.width, grid.height)))
    request = EncodeRequest(bpp=rate, steps=settings.steps, effort=settings.effort)
    tw, th = grid.tile_width, grid.tile_height
    plan = resolve(request, tw, th, channels, seed=settings.seed, bpp=8 * budget / (tw * th))
    return replace(plan, budget=min(plan.budget, budget))


class _MeanProgress:
    """The tiles' progress reports as one: the mean of their steps (and of their latest loss and PSNR),
    never backwards."""

    def __init__(self, sink: Callable[[Progress], None], count: int) -> None:
        self.sink, self.done = sink, -1
        self.latest: list[Progress | None] = [None] * count

    def __call__(self, index: int, p: Progress) -> None:
        self.latest[index] = p
        seen = [q for q in self.latest if q is not None]
        step = round(sum(q.step for q in seen) / len(self.latest))
        if step > self.done:
            self.done = step
            n = len(seen)
            self.sink(Progress(p.phase, step, p.total, sum(q.loss for q in seen) / n, sum(q.psnr for q in seen) / n))


def encode_tiles(image: np.ndarray, grid: TileGrid, settings: EncodeSettings = EncodeSettings(),
                 progress: Callable[[Progress], None] | None = None) -> tuple[TiledImage, bytes]:
    """`image` on `grid` (two tiles or more): every tile in one batch, one version-4 blob."""
    start = time.monotonic()
    total = total_budget(settings, grid.width, grid.height)
    plan = tile_plan(settings, grid, image.shape[2], min(tile_budgets(total, grid)))
    fitted: list[FittedImage | None] = [None] * grid.count
    payloads: list[bytes] = [b""] * grid.count
    sink = None if progress is None else _MeanProgress(progress, grid.count)
    for k, outcome in iter_encode(grid.cut(image), plan, sink, settings.device):
        if outcome.error is not None:  # a cancelled or failed tile: the image is not encoded
            raise outcome.error
        fitted[k], payloads[k] = outcome.fitted, outcome.blob
    tiled = TiledImage(grid, [f for f in fitted if f is not None])
    # The PSNR of what decoding gives: the tiles' snapped networks decode exactly, blended as render/tiled.py does.
    tiled.meta = {"psnr": round(measure_psnr(tiled, image), 4), "seconds": round(time.monotonic() - start, 3)}
    blob = encode_tiled_blob(grid, payloads, tiled.meta)
    if len(blob) > total:
        raise TunerError(f"internal: the tiled blob is {len(blob)} bytes, over its budget of {total}")
    return tiled, blob


__all__ = ["encode_any", "encode_tiles", "tile_budgets", "tile_plan", "total_budget"]
