"""The encoder's one entry point: K >= 1 images of one shape and one plan (a single image is K = 1) to
networks and blobs. The training phases of the first attempt run on all K images at once; each image then
finishes on its own, so each blob equals encoding that image alone up to float rounding (exactly, K = 1).

A quality target Y encodes at the table's rate for it, then again, at a higher or lower rate found from the
PSNRs measured so far, while the result is outside [Y, Y + 0.5 dB]; if the attempts end above that window,
the smallest blob that reached Y is quantized again on a coarser grid that still reaches Y.

Stopping is the caller's stop check (core/stop.py): the whole encode (raises FitCancelled), or one image
of a batch (`stop_when(member=...)`, by index: its outcome is FitCancelled, the others go on).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tuner_model.core import colour as colour_mod
from tuner_model.core.device import resolve_device
from tuner_model.core.errors import ConfigError, FitCancelled, Stopped, TunerError
from tuner_model.core.progress import Progress
from tuner_model.core.stop import member_check, stop_when
from tuner_model.models.fitted import FittedImage
from tuner_model.rate import table
from tuner_model.rate.coarsen import coarser_levels
from tuner_model.rate.pipeline import Meter, Tuned, compile_if_worth_it, encode_one, train_phases
from tuner_model.rate.plan import EncodePlan, rate_floor, resolve
from tuner_model.rate.request import EncodeSettings

PSNR_ATTEMPTS = 3
PSNR_TOLERANCE_DB = 0.5  # a --psnr encode aims to land in [Y, Y + this]
MAX_BPP = 32.0
# A quality target's attempts, each with a slice of the progress bar; later ones are rarely needed.
_PSNR_SLICES = ((0.0, 0.7), (0.7, 0.9), (0.9, 1.0))

Encoded = tuple[FittedImage, bytes]


@dataclass(frozen=True)
class Outcome:
    """What became of one image of an encode: its network and blob, or the error that stopped it
    (FitCancelled when it was cancelled). `batch_size` is how many images shared the training phases the
    blob comes from: 1 when this image had to be fitted again on its own (a smaller network, a higher rate)."""

    fitted: FittedImage | None = None
    blob: bytes | None = None
    error: Exception | None = None  # a TunerError; the worker also records anything else it caught here
    batch_size: int = 1

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, FitCancelled)


def iter_encode(images: Sequence[np.ndarray], plan: EncodePlan, progress: Callable[[int, Progress], None] | None = None,
                device: str = "auto") -> Iterator[tuple[int, Outcome]]:
    """Encode `images` ((H, W, C) float in [0, 1], all the plan's shape) as `plan` says, yielding
    (index, outcome) as each image's blob is ready. `progress(index, p)` reports per image."""
    if not images:
        return
    if any(im.shape != (plan.height, plan.width, plan.channels) for im in images):
        raise ConfigError(f"the images must all be {plan.width}x{plan.height} with {plan.channels} channels, "
                          "the plan's shape")
    colour_mod.check(plan.colour, plan.channels)
    device = str(resolve_device(device))
    compile_if_worth_it(plan, device)
    k = len(images)
    stopped = member_check()
    meters = [Meter(None if progress is None else functools.partial(progress, i), plan.total_steps) for i in range(k)]
    first_slice = (0.0, 1.0) if plan.request.psnr is None else _PSNR_SLICES[0]
    shares = [m.attempt(plan, *first_slice) for m in meters]
    try:
        tuned = train_phases(plan, [colour_mod.forward(im, plan.colour) for im in images], device, shares, stopped)
    except Stopped as e:
        raise e if isinstance(e, FitCancelled) else FitCancelled(f"encode stopped: {e}") from None
    for i, image in enumerate(images):
        first = tuned[i]
        if isinstance(first, TunerError):
            yield i, Outcome(error=first, batch_size=k)
            continue
        if first is None or (stopped is not None and stopped(i)):
            yield i, Outcome(error=FitCancelled("cancelled"), batch_size=k)
            continue
        try:
            with stop_when(None if stopped is None else lambda i=i: "cancelled" if stopped(i) else None):
                fitted, blob = _reach_target(plan, image, encode_one(plan, image, device, shares[i], first),
                                             meters[i], device)
        except Stopped as e:
            if k == 1 and stopped is None:
                raise e if isinstance(e, FitCancelled) else FitCancelled(f"encode stopped: {e}") from None
            yield i, Outcome(error=e if isinstance(e, FitCancelled) else FitCancelled(str(e)), batch_size=k)
            continue
        except TunerError as e:  # this image's own trouble (a budget too small): the others go on
            if k == 1:
                raise
            yield i, Outcome(error=e, batch_size=k)
            continue
        shared = isinstance(first, Tuned) and fitted is first.fitted  # quantized in place: the shared network
        yield i, Outcome(fitted, blob, batch_size=k if shared else 1)


def encode_batch(images: Sequence[np.ndarray], plan: EncodePlan,
                 progress: Callable[[int, Progress], None] | None = None, device: str = "auto") -> list[Outcome]:
    """`iter_encode`'s outcomes in order; when every image was cancelled this raises FitCancelled."""
    outcomes: list[Outcome] = [Outcome()] * len(images)
    for i, outcome in iter_encode(images, plan, progress, device):
        outcomes[i] = outcome
    if outcomes and all(o.cancelled for o in outcomes):
        raise FitCancelled("every image of the batch was cancelled")
    return outcomes


def encode(image: np.ndarray, settings: EncodeSettings = EncodeSettings(),
           progress: Callable[[Progress], None] | None = None) -> Encoded:
    """One image as `settings` ask (a request with a device and a seed): `iter_encode` with K = 1. At most
    `bpp` bits per pixel, or the smallest table rate expected to reach `psnr`, or DEFAULT_BPP."""
    h, w, c = image.shape
    return encode_planned(image, resolve(settings, w, h, c, seed=settings.seed), progress, settings.device)


def encode_planned(image: np.ndarray, plan: EncodePlan, progress: Callable[[Progress], None] | None = None,
                   device: str = "auto") -> Encoded:
    """One image by a plan (benchmarks and the table fitting make their own): `iter_encode` with K = 1,
    its error raised."""
    for _, outcome in iter_encode([image], plan, None if progress is None else lambda _i, p: progress(p), device):
        if outcome.error is not None:
            raise outcome.error
        return outcome.fitted, outcome.blob
    raise ConfigError("internal: no outcome")  # iter_encode yields once per image


def _reach_target(plan: EncodePlan, image: np.ndarray, first: Encoded, meter: Meter, device: str) -> Encoded:
    """After the first encode: with a quality target Y, encode again (up to PSNR_ATTEMPTS encodes in all)
    while the measured PSNR is outside [Y, Y + PSNR_TOLERANCE_DB]: below it, at a higher rate; far above it,
    at a lower one. Keeps the smallest blob that reaches Y (or, if none does, the best one)."""
    target = plan.request.psnr
    tries = [(plan, first)]
    if target is not None:
        floor = rate_floor(plan.width, plan.height)
        for lo, hi in _PSNR_SLICES[1:PSNR_ATTEMPTS]:
            got = _pick(tries, target)[1][0].meta["psnr"]
            if target <= got <= target + PSNR_TOLERANCE_DB:
                break
            nxt = next_rate([(p.bpp, r[0].meta["psnr"]) for p, r in tries], target + PSNR_TOLERANCE_DB / 2,
                            table.psnr_slope(), floor)
            if nxt is None:
                break
            again = plan.at_rate(nxt)
            compile_if_worth_it(again, device)
            tries.append((again, encode_one(again, image, device, meter.attempt(again, lo, hi))))
    best_plan, best = _pick(tries, target)
    if target is not None and best[0].meta["psnr"] > target + PSNR_TOLERANCE_DB:
        # Every attempt that reached Y overshot the window: the same network on a coarser grid lands in it
        # with fewer bytes, without another fit.
        coarse = coarser_levels(image, best[0], best_plan.levels, target)
        if coarse is not None and len(coarse[1]) < len(best[1]):
            best = coarse
    meter.report(1.0, "finish", float("nan"), best[0].meta["psnr"])
    return best


def _pick(tries: list[tuple[EncodePlan, Encoded]], target: float | None) -> tuple[EncodePlan, Encoded]:
    """The smallest blob that reaches the target, else the highest PSNR."""
    if target is None:
        return tries[0]
    reached = [t for t in tries if t[1][0].meta["psnr"] >= target]
    if reached:
        return min(reached, key=lambda t: len(t[1][1]))
    return max(tries, key=lambda t: t[1][0].meta["psnr"])


def next_rate(points: list[tuple[float, float]], aim: float, slope: float, floor: float) -> float | None:
    """The rate to try next for PSNR `aim`, from the (bpp, psnr) points measured so far: between the
    nearest points below and above the aim, the secant in log bpp; on one side only, the nearest point
    moved by the table's dB per doubling `slope` (or the measured one, when two points lie on that side).
    None when the answer is a rate already tried (within 1 %) or past the limits."""
    below = sorted((p for p in points if p[1] < aim), key=lambda p: aim - p[1])
    above = sorted((p for p in points if p[1] >= aim), key=lambda p: p[1] - aim)
    if below and above:
        (b0, p0), (b1, p1) = below[0], above[0]
    else:
        side = below or above
        (b0, p0) = side[0]
        if len(side) > 1 and abs(side[1][1] - p0) > 0.05 and side[1][0] != b0:
            measured = (side[1][1] - p0) / math.log2(side[1][0] / b0)
            slope = measured if measured > 0.3 else slope
        b1, p1 = b0 * 2.0, p0 + max(slope, 0.3)
    if p1 == p0:
        return None
    t = (aim - p0) / (p1 - p0)
    rate = b0 * (b1 / b0) ** t
    rate = min(MAX_BPP, max(floor, rate))
    if any(abs(rate / b - 1) < 0.01 for b, _ in points):
        return None
    return rate
