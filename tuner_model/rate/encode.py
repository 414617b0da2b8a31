"""From an image and what the user asks for (a rate, a quality, or nothing) to a fitted network and its
blob: the one entry point the CLI and the worker call. A rate is encoded by pipeline.py; a quality
target Y encodes at the table's rate for it, then again, at a higher or lower rate found from the PSNRs
measured so far, while the result is outside [Y, Y + 0.5 dB]; if the attempts end above that window, the
smallest blob that reached Y is quantized again on a coarser grid that still reaches Y.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tuner_model.core.errors import FitCancelled, Stopped
from tuner_model.models.fitted import FittedImage
from tuner_model.rate import table
from tuner_model.rate.coarsen import coarser_levels
from tuner_model.rate.pipeline import RateOptions, RateProgress, encode_at_rate
from tuner_model.rate.request import DEFAULT_BPP, EncodeSettings
from tuner_model.train.fit import FitProgress

PSNR_ATTEMPTS = 3
MIN_PSNR_MODE_BYTES = 160  # header + a network of a few dozen parameters


class Progress:
    """Maps the phases (fit, fine-tuning, retries) onto one monotonic fraction reported as FitProgress."""

    def __init__(self, sink: Callable[[FitProgress], None] | None, total: int) -> None:
        self.sink, self.total, self.done = sink, max(1, total), 0

    def report(self, frac: float, loss: float, psnr: float) -> None:
        step = min(self.total, int(round(frac * self.total)))
        if step > self.done:  # never backwards, never the same step twice
            self.done = step
            if self.sink is not None:
                self.sink(FitProgress(step, self.total, loss, psnr))


# A quality target's attempts, each with a slice of the progress bar; later ones are rarely needed.
_PSNR_SLICES = ((0.0, 0.7), (0.7, 0.9), (0.9, 1.0))


def first_bpp(shape: tuple[int, ...], settings: EncodeSettings) -> float:
    """The rate of the first (often the only) encode."""
    floor = rate_floor(shape)
    if settings.psnr is None:
        # No target given: the default rate, but never below a header's worth on a tiny image.
        return settings.bpp or max(DEFAULT_BPP, floor)
    # The table's rates are for Kodak-sized images.
    return max(table.bpp_for_psnr(settings.psnr), floor)


def rate_floor(shape: tuple[int, ...]) -> float:
    """The lowest rate worth an encode: on a tiny image the header alone can exceed a table rate."""
    h, w = shape[:2]
    return 8 * MIN_PSNR_MODE_BYTES / (w * h)


def first_slice(settings: EncodeSettings) -> tuple[float, float]:
    return (0.0, 1.0) if settings.psnr is None else _PSNR_SLICES[0]


def sliced(reporter: Progress, lo: float, hi: float) -> RateProgress:
    return lambda f, loss, p: reporter.report(lo + f * (hi - lo), loss, p)


def reach_target(image: np.ndarray, settings: EncodeSettings, first: tuple[FittedImage, bytes], bpp: float,
                  reporter: Progress) -> tuple[FittedImage, bytes]:
    """After the first encode: with a quality target Y, encode again (up to PSNR_ATTEMPTS encodes in all)
    while the measured PSNR is outside [Y, Y + PSNR_TOLERANCE_DB]: below it, at a higher rate; far above it,
    at a lower one. Keeps the smallest blob that reaches Y (or, if none does, the best one)."""
    tries = [(bpp, first)]
    if settings.psnr is not None:
        floor = rate_floor(image.shape)
        for lo, hi in _PSNR_SLICES[1:PSNR_ATTEMPTS]:
            got = _pick(tries, settings.psnr)[1][0].meta["psnr"]
            if settings.psnr <= got <= settings.psnr + PSNR_TOLERANCE_DB:
                break
            nxt = next_rate([(b, r[0].meta["psnr"]) for b, r in tries], settings.psnr + PSNR_TOLERANCE_DB / 2,
                            table.psnr_slope(), floor)
            if nxt is None:
                break
            tries.append((nxt, encode_at_rate(image, rate_options(settings, nxt), sliced(reporter, lo, hi))))
    best_bpp, best = _pick(tries, settings.psnr)
    if settings.psnr is not None and best[0].meta["psnr"] > settings.psnr + PSNR_TOLERANCE_DB:
        # Every attempt that reached Y overshot the window: the same network on a coarser grid lands in it
        # with fewer bytes, without another fit.
        coarse = coarser_levels(image, best[0], rate_options(settings, best_bpp), settings.psnr)
        if coarse is not None and len(coarse[1]) < len(best[1]):
            best = coarse
    reporter.report(1.0, float("nan"), best[0].meta["psnr"])
    return best


PSNR_TOLERANCE_DB = 0.5  # a --psnr encode aims to land in [Y, Y + this]
MAX_BPP = 32.0


def _pick(tries: list[tuple[float, tuple[FittedImage, bytes]]], target: float | None
          ) -> tuple[float, tuple[FittedImage, bytes]]:
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


def rate_options(settings: EncodeSettings, bpp: float) -> RateOptions:
    return RateOptions(bpp, settings.plan, settings.device, settings.seed)


def reporter_for(settings: EncodeSettings, sink: Callable[[FitProgress], None] | None) -> Progress:
    plan = settings.plan
    return Progress(sink, plan.steps + plan.qat_steps)


def encode(image: np.ndarray, settings: EncodeSettings = EncodeSettings(),
           progress: Callable[[FitProgress], None] | None = None) -> tuple[FittedImage, bytes]:
    """Fit, quantize and code `image` ((H, W, C) float in [0, 1]) as the settings ask: at most
    `bpp` bits per pixel, or the smallest table rate expected to reach `psnr` (re-encoding at a higher
    rate, up to PSNR_ATTEMPTS times, when the measured PSNR falls short), or DEFAULT_BPP.
    The caller's stop check (core/stop.py) is polled every step, between a step's row tiles, and between
    the tiles of the renders that measure the result; when it gives a reason the encode raises FitCancelled."""
    try:
        return _encode(image, settings, progress)
    except FitCancelled:
        raise
    except Stopped as e:
        raise FitCancelled(f"encode stopped: {e}") from None


def _encode(image: np.ndarray, settings: EncodeSettings,
            progress: Callable[[FitProgress], None] | None) -> tuple[FittedImage, bytes]:
    reporter = reporter_for(settings, progress)
    bpp = first_bpp(image.shape, settings)
    first = encode_at_rate(image, rate_options(settings, bpp), sliced(reporter, *first_slice(settings)))
    return reach_target(image, settings, first, bpp, reporter)
