"""From an image and what the user asks for (a rate, a quality, or nothing) to a fitted network and its
blob. This is the one entry point the CLI and the worker call; rate control lives behind it.

Pipeline (docs/CODEC.md): size the network from the rate-control table → float fit → search the
quantization levels Q whose blob fits the budget → quantization-aware fine-tuning at that Q → search Q
again on the tuned weights → snap the weights to the grid → PSNR of exactly what decoding gives → blob.
`encode_batch` does the same for several images of one shape, their float fits and fine-tuning batched.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tuner_model.codec import encode_blob, entropy
from tuner_model.codec.quant import MAX_LEVELS, QuantSpec, plan, snap
from tuner_model.core import colour as colour_mod
from tuner_model.core.device import resolve_device
from tuner_model.core.errors import ConfigError, FitCancelled, TunerError
from tuner_model.core.frequencies import cycles_to_k
from tuner_model.models import ModelConfig, build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.rate import table as ratecontrol
from tuner_model.rate.effort import DEFAULT_EFFORT, EffortPlan, effort_plan, estimate_seconds
from tuner_model.train import fused
from tuner_model.train.fit import FitOptions, FitProgress, fit
from tuner_model.train.qat import qat_finetune, qat_finetune_batch

CODEC_BETAS, CODEC_CLIP, CODEC_PHASE_LR = (0.9, 0.99), 0.02, 10.0  # the float fit's Adam (fit_options)
# Neither --bpp nor --psnr: a rate that looks good, like an image proxy's default quality (JPEG needs
# ~2 bpp for ~37 dB on Kodak; a 96×64 photo still gets > 26 dB from 300 steps on the CPU).
DEFAULT_BPP = 2.0
PSNR_ATTEMPTS = 3
MIN_PSNR_MODE_BYTES = 160  # header + a network of a few dozen parameters


@dataclass(frozen=True)
class EncodeSettings:
    bpp: float | None = None  # target rate: the blob stays at or under it
    psnr: float | None = None  # target quality in dB
    steps: int | None = None  # override the effort's float-fit steps (advanced)
    device: str = "auto"
    seed: int = 0
    effort: int = DEFAULT_EFFORT  # 1..9: how much fitting (effort.py)

    def __post_init__(self) -> None:
        if self.bpp is not None and not 0.01 <= self.bpp <= 64:
            raise ConfigError(f"bpp must be in [0.01, 64], got {self.bpp}")
        if self.psnr is not None and not 10 <= self.psnr <= 80:
            raise ConfigError(f"psnr must be in [10, 80] dB, got {self.psnr}")
        if self.bpp is not None and self.psnr is not None:
            raise ConfigError("give a target bpp or a target psnr, not both")
        if self.steps is not None and not 1 <= self.steps <= 1_000_000:
            raise ConfigError(f"steps must be in 1..1000000, got {self.steps}")
        effort_plan(self.effort)  # validates it

    @property
    def plan(self) -> EffortPlan:
        return effort_plan(self.effort, self.steps)


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


def _bisect_levels(size: Callable[[int], int], budget: int, fits: int, over: int) -> int:
    """The largest Q in [fits, over) at most `budget`, given size(fits) <= budget < size(over): sizes
    grow with Q (more levels, more bits)."""
    while over - fits > 1:
        mid = (fits + over) // 2
        if size(mid) <= budget:
            fits = mid
        else:
            over = mid
    return fits


def _bracket_from(size: Callable[[int], int], budget: int, start: int, hi: int) -> int | None:
    """The largest Q in 1..hi whose size is at most `budget` (None when even Q = 1 is too big), searched
    from a guess: probes 1, 2, 4, ... levels away from `start` until the boundary is bracketed, then
    bisects. An exact guess costs two sizes."""
    start = min(max(start, 1), hi)
    if size(start) <= budget:
        fits, offset = start, 1
        while fits < hi:
            nxt = min(hi, start + offset)
            if size(nxt) > budget:
                return _bisect_levels(size, budget, fits, nxt)
            fits, offset = nxt, offset * 2
        return hi
    over, offset = start, 1
    while over > 1:
        nxt = max(1, start - offset)
        if size(nxt) <= budget:
            return _bisect_levels(size, budget, nxt, over)
        over, offset = nxt, offset * 2
    return None


_INTERPOLATIONS = 3


def _estimate_levels(size: Callable[[int], int], budget: int, hi: int) -> int | None:
    """A Q near the largest one in 1..hi whose size is at most `budget` (None when even Q = 1 is too
    big), in a few probes: a blob grows about linearly in log Q (each doubling of the levels adds about
    a bit per weight), so regula falsi in log Q between 1 and hi lands within a few levels."""
    fits, s_fits = 1, size(1)
    if s_fits > budget:
        return None
    over, s_over = hi, size(hi)
    if s_over <= budget:
        return hi
    for _ in range(_INTERPOLATIONS):
        if over - fits <= 1:
            break
        t = (budget - s_fits) / (s_over - s_fits)
        q = min(max(round(fits * (over / fits) ** t), fits + 1), over - 1)
        s = size(q)
        if s <= budget:
            fits, s_fits = q, s
        else:
            over, s_over = q, s
    return fits


def _find_levels(real: Callable[[int], int], predicted: Callable[[int], int], budget: int, hi: int,
                 guess: int | None = None) -> int | None:
    """The largest Q in 1..hi whose real size is at most `budget` (None when even Q = 1 is too big).
    The boundary is found on the cheap predicted sizes (from `guess`, or from an estimate), then
    confirmed on real ones, starting there: with a prediction exact to a word, two real sizes."""
    start = guess if guess is not None else _estimate_levels(predicted, budget, hi)
    if start is not None:
        start = _bracket_from(predicted, budget, start, hi)
    return _bracket_from(real, budget, start or 1, hi)


def _search_levels(fitted: FittedImage, spec: QuantSpec, budget: int, hi: int = 4096,
                   guess: int | None = None) -> int | None:
    """The largest Q whose blob is at most `budget` bytes (None when even Q = 1 is too big); `guess` is
    a Q expected near the answer (the search before fine-tuning, for the one after).

    Searches on predicted blob sizes (`entropy.predicting`: the coder's length computed from the
    models' probabilities, no coding), then on real blobs around the predicted answer: measured 3.3
    predicted and 2.0 real blobs a search, where a bisection coded ~13. The answer rests on real sizes
    only."""
    hi = min(hi, MAX_LEVELS)

    @functools.cache
    def real(q: int) -> int:
        return len(encode_blob(fitted, spec.with_levels(q)))

    @functools.cache
    def predicted(q: int) -> int:
        with entropy.predicting():
            return len(encode_blob(fitted, spec.with_levels(q)))

    return _find_levels(real, predicted, budget, hi, guess)


@dataclass(frozen=True)
class _RateSetup:
    """Everything one encode at a byte budget decides before seeing the pixels: the same for every image
    of one shape and request, which is what lets a batch share the float fit."""

    width: int
    height: int
    channels: int
    colour: str
    bpp: float
    budget: int  # bytes the blob may take
    net_width: int  # the first attempt's network width
    levels: int | None  # a fixed Q (the table fitting), or None to search it
    q_plan: int
    steps: int
    n_qat: int
    device: str
    seed: int
    batch_rows: int | None = None  # rows per float-fit step (None: all)
    batch_cols: int | None = None  # columns per float-fit step (None: all)
    qat_batch_rows: int | None = None  # rows per fine-tuning step

    @property
    def total(self) -> int:
        return self.steps + self.n_qat

    @property
    def fit_share(self) -> float:
        """The float fit's share of the encode's time (its steps weighted by the rows they see)."""
        fit = self.steps * (self.batch_rows or self.height) * (self.batch_cols or self.width) / self.width
        return fit / max(1, fit + self.n_qat * (self.qat_batch_rows or self.height))

    def config(self, net_width: int) -> ModelConfig:
        return default_config(self.width, self.height, self.channels, net_width)

    def fit_options(self) -> FitOptions:
        # The codec's fit (not the paper benchmark's plain Adam): Adam β2 0.99, gradient norm clipped at
        # 0.02 and phases at 10× lr measured +0.10 dB through this encoder (kodim01/05/07/23 at 192×128,
        # 0.5 and 1 bpp, 2 seeds, 600 steps: 15 of 16 encodes better, −0.01…+0.24 dB; docs/CODEC.md).
        return FitOptions(steps=self.steps, device=self.device, seed=self.seed,
                          progress_every=max(1, min(10, self.steps // 20)), batch_rows=self.batch_rows,
                          batch_cols=self.batch_cols,
                          betas=CODEC_BETAS, clip_grad_norm=CODEC_CLIP, phase_lr_mult=CODEC_PHASE_LR)

    def unquantized(self, config: ModelConfig, model: torch.nn.Module) -> FittedImage:
        # psnr is a fixed-size f32 in the header: a placeholder now makes the size search exact.
        return FittedImage(config, self.width, self.height, model, self.colour, {"psnr": 0.0, "steps": self.total})


def _rate_setup(shape: tuple[int, ...], bpp: float, plan: EffortPlan, device: str = "auto", seed: int = 0,
                levels: int | None = None, net_width: int | None = None, colour: str | None = None) -> _RateSetup:
    h, w, c = shape
    colour = colour or ("gray" if c == 1 else "rgb")
    colour_mod.check(colour, c)
    rc = ratecontrol.plan_for_bpp(bpp, w, h, c)
    return _RateSetup(width=w, height=h, channels=c, colour=colour, bpp=bpp, budget=rc.target_bytes,
                      net_width=net_width or rc.width, levels=levels, q_plan=levels or rc.levels, steps=plan.steps,
                      n_qat=plan.qat_steps, device=str(resolve_device(device)), seed=seed,
                      batch_rows=plan.batch_rows(h), batch_cols=plan.batch_cols(w),
                      qat_batch_rows=plan.qat_batch_rows(h))


class _OverBudget(Exception):
    """Even Q = 1 does not fit the budget: the network is too big and is refitted smaller."""

    def __init__(self, after_qat: bool) -> None:
        super().__init__("over budget")
        self.after_qat = after_qat


RateProgress = Callable[[float, float, float], None]  # (fraction 0..1 of this encode, loss, psnr)
Cancel = Callable[[], bool]


def _float_fit(setup: _RateSetup, target: np.ndarray, net_width: int, progress: RateProgress | None,
               should_cancel: Cancel | None) -> tuple[FittedImage, float]:
    """One network of `net_width` fitted to `target` (the image in the network's colour space)."""
    config = setup.config(net_width)
    model = build_model(config, seed=setup.seed)

    def fit_progress(p: FitProgress) -> None:
        if progress is not None:
            progress(p.step / setup.steps * setup.fit_share, p.loss, p.psnr)

    result = fit(model, target, setup.fit_options(), progress=fit_progress, should_cancel=should_cancel)
    return setup.unquantized(config, result.model.cpu()), result.seconds


@dataclass
class _FirstFit:
    """A first attempt's float fit made by a batch, and, once `levels` is set, already through the
    level search and fine-tuning at that Q (batched too)."""

    fitted: FittedImage
    seconds: float
    levels: int | None = None


def _first_levels(setup: _RateSetup, fitted: FittedImage) -> int:
    """The Q to fine-tune at: the table's, or the largest whose blob fits. _OverBudget when none does."""
    q = setup.q_plan if setup.levels else _search_levels(fitted, QuantSpec(setup.q_plan), setup.budget)
    if q is None:
        raise _OverBudget(after_qat=False)
    return q


def _qat_progress(setup: _RateSetup, progress: RateProgress | None) -> Callable[[int, float], None]:
    def report(i: int, loss: float) -> None:
        if progress is not None:
            frac = setup.fit_share + (1 - setup.fit_share) * i / max(1, setup.n_qat)
            progress(frac, loss, 10 * math.log10(1 / max(loss, 1e-12)))

    return report


def _quantize(setup: _RateSetup, image: np.ndarray, target: np.ndarray, fitted: FittedImage, seconds: float,
              progress: RateProgress | None, should_cancel: Cancel | None,
              tuned_levels: int | None = None) -> tuple[FittedImage, bytes]:
    """The post-fit pipeline, on `fitted` in place: level search, QAT, search again, snap, PSNR of exactly
    what decoding gives, blob. `tuned_levels`: the first search and QAT already ran (a batch) at that Q.
    Raises _OverBudget when the network cannot fit the budget."""
    q = tuned_levels
    if q is None:
        q = _first_levels(setup, fitted)
        if setup.n_qat:
            _fine_tune(setup, fitted, target, q, setup.n_qat, _qat_progress(setup, progress), should_cancel)
    return _finish(setup, image, target, fitted, q, seconds, progress, should_cancel)


def _fine_tune(setup: _RateSetup, fitted: FittedImage, target: np.ndarray, q: int, steps: int,
               progress: Callable[[int, float], None] | None, should_cancel: Cancel | None) -> None:
    """Quantization-aware fine-tuning of `fitted` in place at Q = q."""
    qat_finetune(fitted.model, target, plan(fitted.model, QuantSpec(setup.q_plan).with_levels(q)), steps,
                 device=setup.device, progress=progress, should_cancel=should_cancel,
                 batch_rows=setup.qat_batch_rows)
    fitted.model.cpu()


def _finish(setup: _RateSetup, image: np.ndarray, target: np.ndarray, fitted: FittedImage, q: int, seconds: float,
            progress: RateProgress | None, should_cancel: Cancel | None) -> tuple[FittedImage, bytes]:
    """After fine-tuning at Q = q: search again, snap, PSNR, blob.

    Fine-tuning moves the weights, so the blob at q can end a few bytes over the budget and the search
    lands one Q lower. Weights tuned to q's grid lose ~2 dB rounded to a coarser one (worse than no
    fine-tuning: measured at 192×128, 2 bpp, 2 of 4 seeds), so they are fine-tuned again, more
    briefly, at the Q they will be stored with."""
    spec = QuantSpec(setup.q_plan).with_levels(q)
    report = {"levels_tuned": q, "retuned": False}  # reported with the result, not stored in the blob
    if not setup.levels:
        q2 = _search_levels(fitted, spec, setup.budget, hi=max(q * 2, 4), guess=q)
        if q2 is None:
            raise _OverBudget(after_qat=True)
        if q2 < q and setup.n_qat:
            report["retuned"] = True
            _fine_tune(setup, fitted, target, q2, max(1, setup.n_qat // 2), None, should_cancel)
            q3 = _search_levels(fitted, spec, setup.budget, hi=q2, guess=q2)  # no finer than it was tuned at
            if q3 is None:
                raise _OverBudget(after_qat=True)
            q2 = q3
        spec = spec.with_levels(q2)
    report["levels"] = spec.levels
    quantizers = plan(fitted.model, spec)
    snap(fitted.model, quantizers)
    fitted.meta["psnr"] = round(fitted.measure_psnr(image), 4)
    blob = encode_blob(fitted, quantizers=quantizers)
    if len(blob) > setup.budget:  # cannot happen while the header's fields keep their sizes; never lie
        raise ConfigError(f"internal: blob of {len(blob)} bytes over the {setup.budget}-byte budget")
    fitted.meta["seconds"] = round(seconds, 3)  # reported, not stored: every byte counts
    fitted.meta.update(report)
    if progress is not None:
        progress(1.0, float("nan"), fitted.meta["psnr"])
    return fitted, blob


def _encode_rate(setup: _RateSetup, image: np.ndarray, progress: RateProgress | None,
                 should_cancel: Cancel | None, first: _FirstFit | None = None) -> tuple[FittedImage, bytes]:
    """Fit and quantize, shrinking the network and fitting again while it cannot fit the budget. `first`
    is a float fit already made at `setup.net_width` (by a batch): the first attempt starts from it."""
    target = colour_mod.forward(image, setup.colour)
    net_width = setup.net_width
    for attempt in range(4):
        tuned = None
        if attempt == 0 and first is not None:
            fitted, seconds, tuned = first.fitted, first.seconds, first.levels
        else:
            fitted, seconds = _float_fit(setup, target, net_width, progress, should_cancel)
        try:
            return _quantize(setup, image, target, fitted, seconds, progress, should_cancel, tuned)
        except _OverBudget as e:  # too big for the budget even at the fewest levels: shrink and refit
            net_width = max(ratecontrol.MIN_WIDTH, int(net_width * 0.75))
            if not e.after_qat and net_width == ratecontrol.MIN_WIDTH and attempt:
                break
    raise ConfigError(f"{setup.bpp} bpp is too small a budget for a {setup.width}x{setup.height} image")


def encode_at_rate(image: np.ndarray, bpp: float, plan: EffortPlan | int, device: str = "auto", seed: int = 0,
                   progress: RateProgress | None = None, should_cancel: Cancel | None = None,
                   levels: int | None = None, net_width: int | None = None,
                   colour: str | None = None) -> tuple[FittedImage, bytes]:
    """One encode at a byte budget of floor(bpp·W·H/8), fitted as `plan` says (an int: that many float
    steps at the default effort's row share). `levels`/`net_width` override the table (the table fitting
    uses them); `progress(frac, loss, psnr)` gets fractions 0..1 of this encode."""
    if isinstance(plan, int):
        plan = effort_plan(DEFAULT_EFFORT, plan)
    setup = _rate_setup(image.shape, bpp, plan, device, seed, levels, net_width, colour)
    _compile_if_worth_it(setup, plan)
    return _encode_rate(setup, image, progress, should_cancel)


COMPILE_AFTER_S = 30.0  # compiling the fused backward costs ~3.5 s once per process and saves ~12 % a step


def _compile_if_worth_it(setup: _RateSetup, plan: EffortPlan) -> None:
    """Compile the grid path's fused backward for a CPU encode long enough to pay for it (train/grid.py)."""
    if setup.device != "cpu" or fused.fused_in_use():
        return
    if estimate_seconds(setup.width, setup.height, setup.net_width, plan) > COMPILE_AFTER_S:
        fused.warm_up()


# A quality target's attempts, each with a slice of the progress bar; later ones are rarely needed.
_PSNR_SLICES = ((0.0, 0.7), (0.7, 0.9), (0.9, 1.0))


def _first_bpp(shape: tuple[int, ...], settings: EncodeSettings) -> float:
    """The rate of the first (often the only) encode."""
    h, w = shape[:2]
    floor = 8 * MIN_PSNR_MODE_BYTES / (w * h)  # on a tiny image the header alone can exceed a table rate
    if settings.psnr is None:
        # No target given: the default rate, but never below a header's worth on a tiny image.
        return settings.bpp or max(DEFAULT_BPP, floor)
    # The table's rates are for Kodak-sized images.
    return max(ratecontrol.bpp_for_psnr(settings.psnr), floor)


def _first_slice(settings: EncodeSettings) -> tuple[float, float]:
    return (0.0, 1.0) if settings.psnr is None else _PSNR_SLICES[0]


def _sliced(reporter: _Progress, lo: float, hi: float) -> RateProgress:
    return lambda f, loss, p: reporter.report(lo + f * (hi - lo), loss, p)


def _reach_target(image: np.ndarray, settings: EncodeSettings, first: tuple[FittedImage, bytes], bpp: float,
                  reporter: _Progress, should_cancel: Cancel | None) -> tuple[FittedImage, bytes]:
    """After the first encode: with a quality target, encode again at a higher rate (up to PSNR_ATTEMPTS
    encodes in all) while the measured PSNR falls short."""
    best = first
    if settings.psnr is not None:
        for lo, hi in _PSNR_SLICES[1:PSNR_ATTEMPTS]:
            miss = settings.psnr - best[0].meta["psnr"]
            if miss <= 0 or bpp >= 32:
                break
            bpp = min(32.0, bpp * 2 ** (miss / ratecontrol.psnr_slope() + 0.1))
            best = encode_at_rate(image, bpp, settings.plan, device=settings.device, seed=settings.seed,
                                  progress=_sliced(reporter, lo, hi), should_cancel=should_cancel)
    reporter.report(1.0, float("nan"), best[0].meta["psnr"])
    return best


def _reporter(settings: EncodeSettings, sink: Callable[[FitProgress], None] | None) -> _Progress:
    plan = settings.plan
    return _Progress(sink, plan.steps + plan.qat_steps)


def encode(image: np.ndarray, settings: EncodeSettings = EncodeSettings(),
           progress: Callable[[FitProgress], None] | None = None,
           should_cancel: Callable[[], bool] | None = None) -> tuple[FittedImage, bytes]:
    """Fit, quantize and code `image` ((H, W, C) float in [0, 1]) as the settings ask: at most
    `bpp` bits per pixel, or the smallest table rate expected to reach `psnr` (re-encoding at a higher
    rate, up to PSNR_ATTEMPTS times, when the measured PSNR falls short), or DEFAULT_BPP."""
    reporter = _reporter(settings, progress)
    bpp = _first_bpp(image.shape, settings)
    first = encode_at_rate(image, bpp, settings.plan, device=settings.device, seed=settings.seed,
                           progress=_sliced(reporter, *_first_slice(settings)), should_cancel=should_cancel)
    return _reach_target(image, settings, first, bpp, reporter, should_cancel)


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one image of `encode_batch`: its network and blob, or the error that stopped it
    (FitCancelled when it was cancelled). `batch_size` is how many images shared the float fit that the
    blob comes from: 1 when this image had to be fitted again on its own (a smaller network, a higher rate)."""

    fitted: FittedImage | None = None
    blob: bytes | None = None
    error: TunerError | None = None
    batch_size: int = 1

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, FitCancelled)


MemberCancel = Callable[[int], bool] | Sequence[Cancel | None] | None


def _member_cancels(should_cancel: MemberCancel, n: int) -> list[Cancel | None]:
    """One cancel callback per image, from a callable taking the image's index or from a list."""
    if should_cancel is None:
        return [None] * n
    if callable(should_cancel):
        return [lambda i=i: should_cancel(i) for i in range(n)]
    cancels = list(should_cancel)
    if len(cancels) != n:
        raise ConfigError(f"{len(cancels)} cancel callbacks for {n} images")
    return cancels


def _is_cancelled(cancel: Cancel | None) -> bool:
    return cancel is not None and cancel()


def _batched_float_fit(setup: _RateSetup, images: Sequence[np.ndarray], progress: Sequence[RateProgress],
                       cancels: Sequence[Cancel | None]) -> list[_FirstFit | None]:
    """The first attempt's float fit of every image as one `fit_batch` (None for a cancelled image)."""
    from tuner_model.train.batched import fit_batch  # only batches pay for importing it

    config = setup.config(setup.net_width)

    def member_progress(k: int, p: FitProgress) -> None:
        progress[k](p.step / setup.steps * setup.fit_share, p.loss, p.psnr)

    try:
        fits = fit_batch(images, config, setup.fit_options(), colour=setup.colour,
                         member_cancelled=lambda k: _is_cancelled(cancels[k]), member_progress=member_progress)
    except FitCancelled:
        return [None] * len(images)
    return [None if f is None else _FirstFit(setup.unquantized(config, f.model), float(f.meta["seconds"]))
            for f in fits]


_FirstStage = _FirstFit | TunerError | None  # ready for the rest of the pipeline, failed, or cancelled


def _batched_fine_tune(setup: _RateSetup, images: Sequence[np.ndarray], firsts: list[_FirstFit | None],
                       progress: Sequence[RateProgress], cancels: Sequence[Cancel | None]) -> list[_FirstStage]:
    """Each first fit's level search (image after image), then the fine-tuning of them all as one
    `qat_finetune_batch`, each at its own Q through its own quantizers: their `levels` set. A network over
    budget even at Q = 1 is left untuned (its own encode shrinks and refits it, as `encode` would); a
    cancelled image becomes None; an image's own error is kept in its place."""
    out: list[_FirstStage] = list(firsts)
    tuning: list[int] = []
    for i, first in enumerate(firsts):
        if first is None:
            continue
        if _is_cancelled(cancels[i]):
            out[i] = None
            continue
        try:
            first.levels = _first_levels(setup, first.fitted)
            tuning.append(i)
        except _OverBudget:
            pass
        except TunerError as e:
            out[i] = e
    if not setup.n_qat or not tuning:
        return out
    tuned = [firsts[i] for i in tuning]
    reports = [_qat_progress(setup, progress[i]) for i in tuning]
    losses = qat_finetune_batch(
        [f.fitted.model for f in tuned], [colour_mod.forward(images[i], setup.colour) for i in tuning],
        [plan(f.fitted.model, QuantSpec(setup.q_plan).with_levels(f.levels)) for f in tuned], setup.n_qat,
        device=setup.device, progress=lambda k, step, loss: reports[k](step, loss),
        member_cancelled=lambda k: _is_cancelled(cancels[tuning[k]]), batch_rows=setup.qat_batch_rows)
    for i, f, loss in zip(tuning, tuned, losses, strict=True):
        f.fitted.model.cpu()
        if loss is None:
            out[i] = None
    return out


def iter_encode_batch(images: Sequence[np.ndarray], settings: EncodeSettings = EncodeSettings(),
                      progress: Callable[[int, FitProgress], None] | None = None,
                      should_cancel: MemberCancel = None) -> Iterator[tuple[int, BatchOutcome]]:
    """`encode_batch`, yielding (index, outcome) as each image's blob is ready: the float fit and the
    fine-tuning are shared, the second level search, snap and blob run image after image, so a caller
    can store the first results while the others finish."""
    if not images:
        return
    shape = images[0].shape
    if any(im.shape != shape for im in images):
        raise ConfigError("encode_batch needs images of one size and channel count")
    cancels = _member_cancels(should_cancel, len(images))
    bpp = _first_bpp(shape, settings)
    setup = _rate_setup(shape, bpp, settings.plan, settings.device, settings.seed)
    _compile_if_worth_it(setup, settings.plan)
    reporters = [_reporter(settings, None if progress is None else functools.partial(progress, i))
                 for i in range(len(images))]
    sliced = [_sliced(r, *_first_slice(settings)) for r in reporters]
    firsts = _batched_fine_tune(setup, images, _batched_float_fit(setup, images, sliced, cancels), sliced, cancels)
    for i, image in enumerate(images):
        first = firsts[i]
        if isinstance(first, TunerError):
            yield i, BatchOutcome(error=first, batch_size=len(images))
            continue
        if first is None or _is_cancelled(cancels[i]):
            yield i, BatchOutcome(error=FitCancelled("cancelled"), batch_size=len(images))
            continue
        try:
            encoded = _encode_rate(setup, image, sliced[i], cancels[i], first=first)
            fitted, blob = _reach_target(image, settings, encoded, bpp, reporters[i], cancels[i])
        except TunerError as e:  # this image's own trouble (cancelled, a budget too small): the others go on
            yield i, BatchOutcome(error=e, batch_size=len(images))
            continue
        shared = fitted is first.fitted  # quantized in place: still the network from the batched fit
        yield i, BatchOutcome(fitted, blob, batch_size=len(images) if shared else 1)


def encode_batch(images: Sequence[np.ndarray], settings: EncodeSettings = EncodeSettings(),
                 progress: Callable[[int, FitProgress], None] | None = None,
                 should_cancel: MemberCancel = None) -> list[BatchOutcome]:
    """`encode` of several images of one shape with one request, the float fits run as one `fit_batch` and
    the fine-tuning as one `qat_finetune_batch` (each network at the Q of its own level search); each
    image goes through the same steps as `encode` alone (level search, QAT, search again, snap, PSNR,
    blob; a smaller network or a higher rate when needed), so each result matches `encode` of that image
    up to float rounding. `progress(index, p)` reports per image. `should_cancel` is a callable
    taking an image's index, or one callable (or None) per image: a cancelled image's outcome is
    FitCancelled while the others go on; when every image is cancelled this raises FitCancelled."""
    outcomes: list[BatchOutcome] = [BatchOutcome()] * len(images)
    for i, outcome in iter_encode_batch(images, settings, progress, should_cancel):
        outcomes[i] = outcome
    if outcomes and all(o.cancelled for o in outcomes):
        raise FitCancelled("every image of the batch was cancelled")
    return outcomes
