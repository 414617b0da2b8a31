"""The encode at one rate: from an image and a byte budget to a fitted, quantized network and its blob.

Pipeline (docs/CODEC.md): size the network from the rate-control table → float fit → search the
quantization levels Q whose blob fits the budget → quantization-aware fine-tuning at that Q → search Q
again on the tuned weights → snap the weights to the grid → PSNR of exactly what decoding gives → blob.
A network that cannot fit the budget even at Q = 1 is shrunk and fitted again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tuner_model.codec import encode_blob
from tuner_model.codec.quant import QuantSpec, plan, snap
from tuner_model.core import colour as colour_mod
from tuner_model.core.device import resolve_device
from tuner_model.core.errors import ConfigError
from tuner_model.core.frequencies import cycles_to_k
from tuner_model.models import ModelConfig, build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.rate import table
from tuner_model.rate.effort import DEFAULT_EFFORT, EffortPlan, effort_plan, estimate_seconds
from tuner_model.rate.levels import search_levels
from tuner_model.train import fused, native
from tuner_model.train.fit import FitOptions, FitProgress, fit
from tuner_model.train.qat import QatOptions, qat_finetune

CODEC_BETAS, CODEC_CLIP, CODEC_PHASE_LR = (0.9, 0.99), 0.02, 10.0  # the float fit's Adam (fit_options)


def default_config(width: int, height: int, channels: int, net_width: int | None = None,
                   depth: int = 1) -> ModelConfig:
    """Network for an image: inputs sampled up to a third of Nyquist along the longer side (harmonics
    up to 3× then reach it, TUNER.md §5), the low block a tenth of that (at least TUNER's 10); m = n =
    net_width (by default from the image size) in each of `depth` hidden layers."""
    period = 4.0
    bandlimit = max(cycles_to_k(max(width, height) / 6, period), 10)
    if net_width is None:
        net_width = 64 if width * height <= 128 * 128 else 128 if width * height <= 512 * 512 else 192
    return ModelConfig(arch="tuner", channels=channels, input_width=net_width, hidden=(net_width,) * depth,
                       period=period, bandlimit=bandlimit, block_limit=block_limit_for(bandlimit))


# The low block's half-width L over the bandlimit B. TUNER's L = 10 was set for its own image sizes; at
# 768×512 (B = 256) a float fit of the 1-bpp network on kodim05, 400 steps, gave 24.00 dB at L = 10, 25.34 at
# 16, 25.83 at 24, 25.84 at 32 and 25.67 at 48 (scripts/fit_sweep.py, docs/CODEC.md "At native scale").
BLOCK_OVER_BANDLIMIT = 0.1


def block_limit_for(bandlimit: int) -> int:
    return min(bandlimit, max(10, int(bandlimit * BLOCK_OVER_BANDLIMIT)))


@dataclass(frozen=True)
class RateSetup:
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
    depth: int = 1  # hidden layers

    @property
    def total(self) -> int:
        return self.steps + self.n_qat

    @property
    def fit_share(self) -> float:
        """The float fit's share of the encode's time (its steps weighted by the rows they see)."""
        fit = self.steps * (self.batch_rows or self.height) * (self.batch_cols or self.width) / self.width
        return fit / max(1, fit + self.n_qat * (self.qat_batch_rows or self.height))

    def config(self, net_width: int) -> ModelConfig:
        return default_config(self.width, self.height, self.channels, net_width, self.depth)

    def fit_options(self) -> FitOptions:
        # The codec's fit (not the paper benchmark's plain Adam): Adam β2 0.99, gradient norm clipped at
        # 0.02 and phases at 10× lr measured +0.10 dB through this encoder (kodim01/05/07/23 at 192×128,
        # 0.5 and 1 bpp, 2 seeds, 600 steps: 15 of 16 encodes better, −0.01…+0.24 dB; docs/CODEC.md).
        return FitOptions(steps=self.steps, device=self.device, seed=self.seed,
                          progress_every=max(1, min(10, self.steps // 20)), batch_rows=self.batch_rows,
                          batch_cols=self.batch_cols,
                          betas=CODEC_BETAS, clip_grad_norm=CODEC_CLIP, phase_lr_mult=CODEC_PHASE_LR)

    def qat_options(self, steps: int | None = None) -> QatOptions:
        return QatOptions(steps or self.n_qat, device=self.device, batch_rows=self.qat_batch_rows)

    def unquantized(self, config: ModelConfig, model: torch.nn.Module) -> FittedImage:
        # psnr is a fixed-size f32 in the header: a placeholder now makes the size search exact.
        return FittedImage(config, self.width, self.height, model, self.colour, {"psnr": 0.0, "steps": self.total})


@dataclass(frozen=True)
class RateOptions:
    """How one encode at a rate is made: the rate, the fitting (an EffortPlan, or an int: that many float
    steps at the default effort's sub-grid shares), where, and overrides of the table (the table fitting
    uses `levels` and `net_width`)."""

    bpp: float
    plan: EffortPlan | int = DEFAULT_EFFORT
    device: str = "auto"
    seed: int = 0
    levels: int | None = None  # a fixed Q instead of the level search
    net_width: int | None = None  # the network width instead of the table's
    colour: str | None = None  # the network's colour space (default: rgb, or gray for one channel)
    depth: int | None = None  # hidden layers instead of the table's

    @property
    def effort_plan(self) -> EffortPlan:
        return self.plan if isinstance(self.plan, EffortPlan) else effort_plan(DEFAULT_EFFORT, self.plan)


def rate_setup(shape: tuple[int, ...], options: RateOptions) -> RateSetup:
    h, w, c = shape
    colour = options.colour or ("gray" if c == 1 else "rgb")
    colour_mod.check(colour, c)
    rc = table.plan_for_bpp(options.bpp, w, h, c)
    plan = options.effort_plan
    return RateSetup(width=w, height=h, channels=c, colour=colour, bpp=options.bpp, budget=rc.target_bytes,
                     net_width=options.net_width or rc.width, levels=options.levels,
                     q_plan=options.levels or rc.levels, steps=plan.steps, n_qat=plan.qat_steps,
                     device=str(resolve_device(options.device)), seed=options.seed,
                     batch_rows=plan.batch_rows(h), batch_cols=plan.batch_cols(w),
                     qat_batch_rows=plan.qat_batch_rows(h), depth=options.depth or rc.depth)


class OverBudget(Exception):
    """Even Q = 1 does not fit the budget: the network is too big and is refitted smaller."""

    def __init__(self, after_qat: bool) -> None:
        super().__init__("over budget")
        self.after_qat = after_qat


RateProgress = Callable[[float, float, float], None]  # (fraction 0..1 of this encode, loss, psnr)
Cancel = Callable[[], bool]


def _float_fit(setup: RateSetup, target: np.ndarray, net_width: int,
               progress: RateProgress | None) -> tuple[FittedImage, float]:
    """One network of `net_width` fitted to `target` (the image in the network's colour space)."""
    config = setup.config(net_width)
    model = build_model(config, seed=setup.seed)

    def fit_progress(p: FitProgress) -> None:
        if progress is not None:
            progress(p.step / setup.steps * setup.fit_share, p.loss, p.psnr)

    result = fit(model, target, setup.fit_options(), progress=fit_progress)
    return setup.unquantized(config, result.model.cpu()), result.seconds


@dataclass
class FirstFit:
    """A first attempt's float fit made by a batch, and, once `levels` is set, already through the
    level search and fine-tuning at that Q (batched too)."""

    fitted: FittedImage
    seconds: float
    levels: int | None = None


def first_levels(setup: RateSetup, fitted: FittedImage) -> int:
    """The Q to fine-tune at: the table's, or the largest whose blob fits. OverBudget when none does."""
    q = setup.q_plan if setup.levels else search_levels(fitted, QuantSpec(setup.q_plan), setup.budget)
    if q is None:
        raise OverBudget(after_qat=False)
    return q


def qat_progress(setup: RateSetup, progress: RateProgress | None) -> Callable[[int, float], None]:
    def report(i: int, loss: float) -> None:
        if progress is not None:
            frac = setup.fit_share + (1 - setup.fit_share) * i / max(1, setup.n_qat)
            progress(frac, loss, 10 * math.log10(1 / max(loss, 1e-12)))

    return report


def _quantize(setup: RateSetup, image: np.ndarray, target: np.ndarray, fitted: FittedImage, seconds: float,
              progress: RateProgress | None,
              tuned_levels: int | None = None) -> tuple[FittedImage, bytes]:
    """The post-fit pipeline, on `fitted` in place: level search, QAT, search again, snap, PSNR of exactly
    what decoding gives, blob. `tuned_levels`: the first search and QAT already ran (a batch) at that Q.
    Raises OverBudget when the network cannot fit the budget."""
    q = tuned_levels
    if q is None:
        q = first_levels(setup, fitted)
        if setup.n_qat:
            _fine_tune(setup, fitted, target, q, setup.n_qat, qat_progress(setup, progress))
    return _finish(setup, image, target, fitted, q, seconds, progress)


def _fine_tune(setup: RateSetup, fitted: FittedImage, target: np.ndarray, q: int, steps: int,
               progress: Callable[[int, float], None] | None) -> None:
    """Quantization-aware fine-tuning of `fitted` in place at Q = q."""
    qat_finetune(fitted.model, target, plan(fitted.model, QuantSpec(setup.q_plan).with_levels(q)),
                 setup.qat_options(steps), progress)
    fitted.model.cpu()


def _finish(setup: RateSetup, image: np.ndarray, target: np.ndarray, fitted: FittedImage, q: int, seconds: float,
            progress: RateProgress | None) -> tuple[FittedImage, bytes]:
    """After fine-tuning at Q = q: search again, snap, PSNR, blob.

    Fine-tuning moves the weights, so the blob at q can end a few bytes over the budget and the search
    lands one Q lower. Weights tuned to q's grid lose ~2 dB rounded to a coarser one (worse than no
    fine-tuning: measured at 192×128, 2 bpp, 2 of 4 seeds), so they are fine-tuned again, more
    briefly, at the Q they will be stored with."""
    spec = QuantSpec(setup.q_plan).with_levels(q)
    report = {"levels_tuned": q, "retuned": False}  # reported with the result, not stored in the blob
    if not setup.levels:
        q2 = search_levels(fitted, spec, setup.budget, hi=max(q * 2, 4), guess=q)
        if q2 is None:
            raise OverBudget(after_qat=True)
        if q2 < q and setup.n_qat:
            report["retuned"] = True
            _fine_tune(setup, fitted, target, q2, max(1, setup.n_qat // 2), None)
            q3 = search_levels(fitted, spec, setup.budget, hi=q2, guess=q2)  # no finer than it was tuned at
            if q3 is None:
                raise OverBudget(after_qat=True)
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


def encode_rate(setup: RateSetup, image: np.ndarray, progress: RateProgress | None,
                first: FirstFit | None = None) -> tuple[FittedImage, bytes]:
    """Fit and quantize, shrinking the network and fitting again while it cannot fit the budget. `first`
    is a float fit already made at `setup.net_width` (by a batch): the first attempt starts from it."""
    target = colour_mod.forward(image, setup.colour)
    net_width = setup.net_width
    for attempt in range(4):
        tuned = None
        if attempt == 0 and first is not None:
            fitted, seconds, tuned = first.fitted, first.seconds, first.levels
        else:
            fitted, seconds = _float_fit(setup, target, net_width, progress)
        try:
            return _quantize(setup, image, target, fitted, seconds, progress, tuned)
        except OverBudget as e:  # too big for the budget even at the fewest levels: shrink and refit
            net_width = max(table.MIN_WIDTH, int(net_width * 0.75))
            if not e.after_qat and net_width == table.MIN_WIDTH and attempt:
                break
    raise ConfigError(f"{setup.bpp} bpp is too small a budget for a {setup.width}x{setup.height} image")


def encode_at_rate(image: np.ndarray, options: RateOptions,
                   progress: RateProgress | None = None) -> tuple[FittedImage, bytes]:
    """One encode at a byte budget of floor(bpp·W·H/8), fitted as `options.plan` says;
    `progress(frac, loss, psnr)` gets fractions 0..1 of this encode."""
    setup = rate_setup(image.shape, options)
    compile_if_worth_it(setup, options.effort_plan)
    return encode_rate(setup, image, progress)


COMPILE_AFTER_S = 30.0  # compiling the fused backward costs ~3.5 s once per process and saves ~12 % a step


def compile_if_worth_it(setup: RateSetup, plan: EffortPlan) -> None:
    """Compile the grid path's fused backward for a CPU encode long enough to pay for it (train/grid.py),
    unless the native top layer (train/native.py), which the encoder's networks take before it, is built."""
    if setup.device != "cpu" or fused.fused_in_use() or native.load() is not None:
        return
    if estimate_seconds(setup.width, setup.height, setup.net_width, plan, depth=setup.depth) > COMPILE_AFTER_S:
        fused.warm_up()
