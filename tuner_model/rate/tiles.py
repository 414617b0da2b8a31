"""Encoding an image above the working size as tiles (issue 28): `encode_any` is the library's entry for an
image of any size.

An image at or under the working size (core/tiling.WORKING_SIZE) is one tile and goes through `encode`
unchanged, byte for byte (a version-2 blob, no container). A larger one is cut into equal overlapping tiles
(core/tiling.tile_grid) and encoded by the one encoder (rate/encode.iter_encode), tiles that share a plan as
one batch (rate/tile_plan.py); their version-2 blobs go into a version-4 container (codec/tiled_blob.py) by
`assemble`, which the service's worker also calls when it has fitted a job's tiles as separate tasks.

The byte budget is the whole image's: bpp·W·H/8 bytes (a quality target: the table's rate for it, over the
whole image), less the container's own bytes, shared among the tiles by their rate–distortion slopes
(rate/allocate.py; or equally) and never exceeded (each tile's level search bounds its real blob size). A
quality target is met on average only (the tiles are encoded at the table's rate for it, and the blob's PSNR
is measured on the blended image): per-tile quality targets are a later step.

Progress is the mean of the tiles' (one Progress, as `encode` reports); stopping is the caller's stop check
(core/stop.py), as for any encode: a cancelled tile cancels the image.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from tuner_model.codec.tiled_blob import encode_tiled_blob
from tuner_model.core.errors import TunerError
from tuner_model.core.progress import Progress
from tuner_model.models.fitted import FittedImage
from tuner_model.models.tiled import TiledImage
from tuner_model.rate.allocate import allocated
from tuner_model.rate.encode import encode, iter_encode
from tuner_model.rate.request import EncodeSettings
from tuner_model.rate.tile_plan import Allocation, TiledPlan, plan_image
from tuner_model.render.fitted import measure_psnr


def encode_any(image: np.ndarray, settings: EncodeSettings = EncodeSettings(),
               progress: Callable[[Progress], None] | None = None, working: tuple[int, int] | None = None,
               allocation: Allocation = "slopes") -> tuple[FittedImage | TiledImage, bytes]:
    """An (H, W, C) image in [0, 1] as `settings` ask: `encode` at or under the working size (`working`,
    default core/tiling.WORKING_SIZE), else `encode_tiles` (the bytes shared by `allocation`)."""
    h, w, c = image.shape
    plan = plan_image(settings, w, h, c, seed=settings.seed, working=working, allocation=allocation)
    if not isinstance(plan, TiledPlan):
        return encode(image, settings, progress)
    return encode_tiles(image, plan, progress, settings.device)


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


def encode_tiles(image: np.ndarray, plan: TiledPlan, progress: Callable[[Progress], None] | None = None,
                 device: str = "auto") -> tuple[TiledImage, bytes]:
    """`image` by a tiled plan, one version-4 blob: the tiles that share a plan (all of them, at equal
    budgets) are one batch."""
    start = time.monotonic()
    tiles = plan.grid.cut(image)
    plan = allocated(plan, tiles)
    count = plan.count
    fitted: list[FittedImage | None] = [None] * count
    payloads: list[bytes] = [b""] * count
    sink = None if progress is None else _MeanProgress(progress, count)
    by_budget: dict[int, list[int]] = {}  # a tile's plan is its budget's: tiles of one budget are one batch
    for k, budget in enumerate(plan.budgets or ()):
        by_budget.setdefault(budget, []).append(k)
    for members in by_budget.values():
        report = None if sink is None else (lambda j, p, members=members: sink(members[j], p))
        for j, outcome in iter_encode([tiles[k] for k in members], plan.tile_plan(members[0]), report, device):
            if outcome.error is not None:  # a cancelled or failed tile: the image is not encoded
                raise outcome.error
            fitted[members[j]], payloads[members[j]] = outcome.fitted, outcome.blob
    return assemble(plan, [f for f in fitted if f is not None], payloads, image, time.monotonic() - start)


def assemble(plan: TiledPlan, tiles: list[FittedImage], payloads: list[bytes], image: np.ndarray,
             seconds: float) -> tuple[TiledImage, bytes]:
    """The version-4 blob of a tiled plan's fitted tiles (row-major) and its PSNR on `image`: what the worker
    that fits the last tile of a job does too."""
    tiled = TiledImage(plan.grid, tiles)
    # The PSNR of what decoding gives: the tiles' snapped networks decode exactly, blended as render/tiled.py does.
    tiled.meta = {"psnr": round(measure_psnr(tiled, image), 4), "seconds": round(seconds, 3)}
    blob = encode_tiled_blob(plan.grid, payloads, tiled.meta)
    if len(blob) > plan.budget:
        raise TunerError(f"internal: the tiled blob is {len(blob)} bytes, over its budget of {plan.budget}")
    return tiled, blob


__all__ = ["assemble", "encode_any", "encode_tiles"]
