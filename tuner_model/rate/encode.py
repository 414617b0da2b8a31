"""From an image and what the user asks for (a rate, a quality, or nothing) to a fitted network and its
blob: the one entry point the CLI and the worker call. A rate is encoded by pipeline.py; a quality
target encodes at the table's rate for it and again at a higher rate while the measured PSNR falls short.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tuner_model.core.errors import FitCancelled
from tuner_model.models.fitted import FittedImage
from tuner_model.rate import table
from tuner_model.rate.pipeline import Cancel, RateOptions, RateProgress, encode_at_rate
from tuner_model.rate.request import DEFAULT_BPP, EncodeSettings
from tuner_model.render.guard import RenderStopped, stop_when
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
    h, w = shape[:2]
    floor = 8 * MIN_PSNR_MODE_BYTES / (w * h)  # on a tiny image the header alone can exceed a table rate
    if settings.psnr is None:
        # No target given: the default rate, but never below a header's worth on a tiny image.
        return settings.bpp or max(DEFAULT_BPP, floor)
    # The table's rates are for Kodak-sized images.
    return max(table.bpp_for_psnr(settings.psnr), floor)


def first_slice(settings: EncodeSettings) -> tuple[float, float]:
    return (0.0, 1.0) if settings.psnr is None else _PSNR_SLICES[0]


def sliced(reporter: Progress, lo: float, hi: float) -> RateProgress:
    return lambda f, loss, p: reporter.report(lo + f * (hi - lo), loss, p)


def reach_target(image: np.ndarray, settings: EncodeSettings, first: tuple[FittedImage, bytes], bpp: float,
                  reporter: Progress, should_cancel: Cancel | None) -> tuple[FittedImage, bytes]:
    """After the first encode: with a quality target, encode again at a higher rate (up to PSNR_ATTEMPTS
    encodes in all) while the measured PSNR falls short."""
    best = first
    if settings.psnr is not None:
        for lo, hi in _PSNR_SLICES[1:PSNR_ATTEMPTS]:
            miss = settings.psnr - best[0].meta["psnr"]
            if miss <= 0 or bpp >= 32:
                break
            bpp = min(32.0, bpp * 2 ** (miss / table.psnr_slope() + 0.1))
            best = encode_at_rate(image, rate_options(settings, bpp), sliced(reporter, lo, hi), should_cancel)
    reporter.report(1.0, float("nan"), best[0].meta["psnr"])
    return best


def rate_options(settings: EncodeSettings, bpp: float) -> RateOptions:
    return RateOptions(bpp, settings.plan, settings.device, settings.seed)


def reporter_for(settings: EncodeSettings, sink: Callable[[FitProgress], None] | None) -> Progress:
    plan = settings.plan
    return Progress(sink, plan.steps + plan.qat_steps)


def encode(image: np.ndarray, settings: EncodeSettings = EncodeSettings(),
           progress: Callable[[FitProgress], None] | None = None,
           should_cancel: Callable[[], bool] | None = None) -> tuple[FittedImage, bytes]:
    """Fit, quantize and code `image` ((H, W, C) float in [0, 1]) as the settings ask: at most
    `bpp` bits per pixel, or the smallest table rate expected to reach `psnr` (re-encoding at a higher
    rate, up to PSNR_ATTEMPTS times, when the measured PSNR falls short), or DEFAULT_BPP.
    `should_cancel` is polled every step, between a step's row tiles, and between the tiles of the renders
    that measure the result; when it answers True the encode raises FitCancelled."""
    if should_cancel is None:
        return _encode(image, settings, progress, None)
    with stop_when(lambda: "cancelled" if should_cancel() else None):
        try:
            return _encode(image, settings, progress, should_cancel)
        except RenderStopped as e:
            raise FitCancelled(f"encode {e}") from None


def _encode(image: np.ndarray, settings: EncodeSettings, progress: Callable[[FitProgress], None] | None,
            should_cancel: Callable[[], bool] | None) -> tuple[FittedImage, bytes]:
    reporter = reporter_for(settings, progress)
    bpp = first_bpp(image.shape, settings)
    first = encode_at_rate(image, rate_options(settings, bpp), sliced(reporter, *first_slice(settings)),
                           should_cancel)
    return reach_target(image, settings, first, bpp, reporter, should_cancel)
