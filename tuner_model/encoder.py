"""From an image and what the user asks for (a rate, a quality, or nothing) to a fitted network and its
blob. This is the one entry point the CLI and the worker call; rate control lives behind it.

Pipeline (docs/CODEC.md): size the network from the rate-control table → float fit → search the
quantization levels Q whose blob fits the budget → quantization-aware fine-tuning at that Q → search Q
again on the tuned weights → snap the weights to the grid → PSNR of exactly what decoding gives → blob.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import colour as colour_mod
from . import ratecontrol
from .codec import encode_blob
from .codec.qat import qat_finetune
from .codec.quant import QuantSpec, plan, snap
from .device import resolve_device
from .errors import ConfigError
from .fit import FitOptions, FitProgress, fit
from .frequencies import cycles_to_k
from .image_model import FittedImage
from .models import ModelConfig, build_model

DEFAULT_STEPS = 1000
# Neither --bpp nor --psnr: a rate that looks good, like an image proxy's default quality (JPEG needs
# ~2 bpp for ~37 dB on Kodak; a 96×64 photo still gets > 26 dB from 300 steps on the CPU).
DEFAULT_BPP = 2.0
QAT_FRACTION = 0.2  # fine-tuning steps as a share of the fit's
MAX_QAT_STEPS = 500
PSNR_ATTEMPTS = 3
MIN_PSNR_MODE_BYTES = 160  # header + a network of a few dozen parameters


@dataclass(frozen=True)
class EncodeSettings:
    bpp: float | None = None  # target rate: the blob stays at or under it
    psnr: float | None = None  # target quality in dB
    steps: int | None = None  # override the planned number of steps
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bpp is not None and not 0.01 <= self.bpp <= 64:
            raise ConfigError(f"bpp must be in [0.01, 64], got {self.bpp}")
        if self.psnr is not None and not 10 <= self.psnr <= 80:
            raise ConfigError(f"psnr must be in [10, 80] dB, got {self.psnr}")
        if self.bpp is not None and self.psnr is not None:
            raise ConfigError("give a target bpp or a target psnr, not both")
        if self.steps is not None and not 1 <= self.steps <= 1_000_000:
            raise ConfigError(f"steps must be in 1..1000000, got {self.steps}")


def default_config(width: int, height: int, channels: int, net_width: int | None = None) -> ModelConfig:
    """Network for an image: inputs sampled up to a third of Nyquist along the longer side (harmonics
    up to 3× then reach it, TUNER.md §5); m = n = net_width (by default from the image size)."""
    period = 4.0
    bandlimit = max(cycles_to_k(max(width, height) / 6, period), 10)
    if net_width is None:
        net_width = 64 if width * height <= 128 * 128 else 128 if width * height <= 512 * 512 else 192
    return ModelConfig(arch="tuner", channels=channels, input_width=net_width, hidden=(net_width,),
                       period=period, bandlimit=bandlimit, block_limit=min(10, bandlimit))


class _Progress:
    """Maps the phases (fit, fine-tuning, retries) onto one monotonic fraction reported as FitProgress."""

    def __init__(self, sink: Callable[[FitProgress], None] | None, total: int) -> None:
        self.sink, self.total, self.done = sink, max(1, total), 0

    def report(self, frac: float, loss: float, psnr: float) -> None:
        step = min(self.total, int(round(frac * self.total)))
        if step > self.done:  # never backwards, never the same step twice
            self.done = step
            if self.sink is not None:
                self.sink(FitProgress(step, self.total, loss, psnr))


def _search_levels(fitted: FittedImage, spec: QuantSpec, budget: int, hi: int = 4096) -> int | None:
    """The largest Q whose blob is at most `budget` bytes (None when even Q = 1 is too big)."""

    def size(q: int) -> int:
        return len(encode_blob(fitted, spec.with_levels(q)))

    if size(1) > budget:
        return None
    lo = 1
    hi = min(hi, 32767)
    if size(hi) <= budget:
        return hi
    while hi - lo > 1:  # size grows with Q (more levels, more bits): bisect
        mid = (lo + hi) // 2
        if size(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def encode_at_rate(image: np.ndarray, bpp: float, steps: int, device: str = "auto", seed: int = 0,
                   progress: Callable[[float, float, float], None] | None = None,
                   should_cancel: Callable[[], bool] | None = None, levels: int | None = None,
                   net_width: int | None = None, colour: str | None = None,
                   qat_steps: int | None = None) -> tuple[FittedImage, bytes]:
    """One encode at a byte budget of floor(bpp·W·H/8). `levels`/`net_width` override the table (the
    table fitting uses them); `progress(frac, loss, psnr)` gets fractions 0..1 of this encode."""
    h, w, c = image.shape
    colour = colour or ("gray" if c == 1 else "rgb")
    colour_mod.check(colour, c)
    rc = ratecontrol.plan_for_bpp(bpp, w, h, c)
    width = net_width or rc.width
    budget = rc.target_bytes
    q_plan = levels or rc.levels
    n_qat = qat_steps if qat_steps is not None else min(MAX_QAT_STEPS, max(10, int(steps * QAT_FRACTION)))
    total = steps + n_qat
    dev = str(resolve_device(device))
    target = colour_mod.forward(image, colour)
    for _attempt in range(4):
        config = default_config(w, h, c, width)
        model = build_model(config, seed=seed)

        def fit_progress(p: FitProgress) -> None:
            if progress is not None:
                progress(p.step / total, p.loss, p.psnr)

        opts = FitOptions(steps=steps, device=dev, seed=seed, progress_every=max(1, min(10, steps // 20)))
        result = fit(model, target, opts, progress=fit_progress, should_cancel=should_cancel)
        # psnr is a fixed-size f32 in the header: a placeholder now makes the size search exact.
        fitted = FittedImage(config, w, h, result.model.cpu(), colour, {"psnr": 0.0, "steps": steps + n_qat})
        spec = QuantSpec(q_plan)
        q = q_plan if levels else _search_levels(fitted, spec, budget)
        if q is None:  # the network was too big for the budget even at 3 levels: shrink and refit
            width = max(ratecontrol.MIN_WIDTH, int(width * 0.75))
            if width == ratecontrol.MIN_WIDTH and _attempt:
                raise ConfigError(f"{bpp} bpp is too small a budget for a {w}x{h} image")
            continue
        spec = spec.with_levels(q)
        if n_qat:
            def qat_progress(i: int, loss: float) -> None:
                if progress is not None:
                    progress((steps + i) / total, loss, 10 * math.log10(1 / max(loss, 1e-12)))

            qat_finetune(fitted.model, target, plan(fitted.model, spec), n_qat, device=dev,
                         progress=qat_progress, should_cancel=should_cancel)
            fitted.model.cpu()
        if not levels:
            q2 = _search_levels(fitted, spec, budget, hi=max(q * 2, 4))
            if q2 is None:
                width = max(ratecontrol.MIN_WIDTH, int(width * 0.75))
                continue
            spec = spec.with_levels(q2)
        quantizers = plan(fitted.model, spec)
        snap(fitted.model, quantizers)
        fitted.meta["psnr"] = round(fitted.measure_psnr(image), 4)
        blob = encode_blob(fitted, quantizers=quantizers)
        if len(blob) > budget:  # cannot happen while the header's fields keep their sizes; never lie
            raise ConfigError(f"internal: blob of {len(blob)} bytes over the {budget}-byte budget")
        fitted.meta["seconds"] = round(result.seconds, 3)  # reported, not stored: every byte counts
        if progress is not None:
            progress(1.0, float("nan"), fitted.meta["psnr"])
        return fitted, blob
    raise ConfigError(f"{bpp} bpp is too small a budget for a {w}x{h} image")


def encode(image: np.ndarray, settings: EncodeSettings = EncodeSettings(),
           progress: Callable[[FitProgress], None] | None = None,
           should_cancel: Callable[[], bool] | None = None) -> tuple[FittedImage, bytes]:
    """Fit, quantize and code `image` ((H, W, C) float in [0, 1]) as the settings ask: at most
    `bpp` bits per pixel, or the smallest table rate expected to reach `psnr` (re-encoding at a higher
    rate, up to PSNR_ATTEMPTS times, when the measured PSNR falls short), or DEFAULT_BPP."""
    steps = settings.steps or DEFAULT_STEPS
    n_qat = min(MAX_QAT_STEPS, max(10, int(steps * QAT_FRACTION)))
    reporter = _Progress(progress, steps + n_qat)
    kw = dict(steps=steps, device=settings.device, seed=settings.seed, should_cancel=should_cancel)
    if settings.psnr is None:
        h, w = image.shape[:2]
        # No target given: the default rate, but never below a header's worth on a tiny image.
        bpp = settings.bpp or max(DEFAULT_BPP, 8 * MIN_PSNR_MODE_BYTES / (w * h))
        return encode_at_rate(image, bpp, progress=reporter.report, **kw)

    # Quality target: each attempt gets a slice of the progress bar; later ones are rarely needed.
    slices = [(0.0, 0.7), (0.7, 0.9), (0.9, 1.0)]
    h, w = image.shape[:2]
    # The table's rates are for Kodak-sized images: on a tiny image the header alone can exceed them.
    bpp = max(ratecontrol.bpp_for_psnr(settings.psnr), 8 * MIN_PSNR_MODE_BYTES / (w * h))
    best: tuple[FittedImage, bytes] | None = None
    for lo, hi in slices[:PSNR_ATTEMPTS]:
        fitted, blob = encode_at_rate(
            image, bpp, progress=lambda f, loss, p, lo=lo, hi=hi: reporter.report(lo + f * (hi - lo), loss, p),
            **kw)
        best = (fitted, blob)
        miss = settings.psnr - fitted.meta["psnr"]
        if miss <= 0 or bpp >= 32:
            break
        bpp = min(32.0, bpp * 2 ** (miss / ratecontrol.psnr_slope() + 0.1))
    assert best is not None
    reporter.report(1.0, float("nan"), best[0].meta["psnr"])
    return best
