"""An encode planned before any pixel is seen: `resolve(request, width, height, channels)` turns what the
caller asks (a rate, a quality or neither; an effort) and the image's size into the rate of the first
attempt, the byte budget, the network, the phases, the steps they count to, the time they should take and
the key of the encodes that may share a batch. Pure data and arithmetic (no torch): the API resolves a plan
to admit a job and to estimate it, the worker resolves it again from the stored request and runs it, and
the CLI and the benchmarks run the same plans.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from tuner_model.core.frequencies import cycles_to_k
from tuner_model.models.config import ModelConfig
from tuner_model.rate import table
from tuner_model.rate.effort import Phase, PhaseKind, preset, rows_for
from tuner_model.rate.request import DEFAULT_BPP, EncodeRequest

MIN_PSNR_MODE_BYTES = 160  # header + a network of a few dozen parameters
# A psnr target may encode up to encode.PSNR_ATTEMPTS (3) times when the measured PSNR falls short; the
# retries are usually needed once at most, so two attempts' time is budgeted.
PSNR_ATTEMPT_FACTOR = 2.0
# Seconds of one full-image grid step per pixel per hidden neuron on the project's 2-core CPU (AMD EPYC, AVX-512),
# with the overheads below: calibrated on 2026-12-07 (issue 28) so that the estimate matches the mean of two
# measured encodes through the service, kodim03 with no parameters on one worker with 2 threads (914.6 s) and
# twelve 694x396 tiles at 1 bpp, effort 1, on one worker with 1 thread (1047 s of fitting); the earlier figure
# (1.37e-8, from one encode on 2026-12-01) overestimated both by 1.7x. Checked on a run it was not fitted to,
# the same 12 tiles on two workers (docs/PERFORMANCE.md, "Large photos as tiles"); scripts/bench_tiles.py
# reports the estimate against the measured time for every run. Another machine sets
# TUNER_FIT_SECONDS_PER_PIXEL_NEURON.
CPU_SECONDS_PER_PIXEL_NEURON = 7.9e-9
OVERHEAD_SECONDS = 5.0  # level searches, snapping, PSNR, blob
STEP_OVERHEAD_SECONDS = 0.004  # per step, whatever its size (a tiny image's steps are all overhead)
# The retune after fine-tuning (the finish phase's steps) runs on some encodes, not all: counted at this weight.
RETUNE_WEIGHT = 1.0


def rate_floor(width: int, height: int) -> float:
    """The lowest rate worth an encode: on a tiny image the header alone can exceed a table rate."""
    return 8 * MIN_PSNR_MODE_BYTES / (width * height)


def first_bpp(request: EncodeRequest, width: int, height: int) -> float:
    """The rate of the first (often the only) encode."""
    floor = rate_floor(width, height)
    if request.psnr is None:
        # No target given: the default rate, but never below a header's worth on a tiny image.
        return request.bpp or max(DEFAULT_BPP, floor)
    # The table's rates are for Kodak-sized images.
    return max(table.bpp_for_psnr(request.psnr), floor)


# The low block's half-width L over the bandlimit B. TUNER's L = 10 was set for its own image sizes; at
# 768×512 (B = 256) a float fit of the 1-bpp network on kodim05, 400 steps, gave 24.00 dB at L = 10, 25.34 at
# 16, 25.83 at 24, 25.84 at 32 and 25.67 at 48 (scripts/fit_sweep.py, docs/CODEC.md "At native scale").
BLOCK_OVER_BANDLIMIT = 0.1


def block_limit_for(bandlimit: int) -> int:
    return min(bandlimit, max(10, int(bandlimit * BLOCK_OVER_BANDLIMIT)))


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


@dataclass(frozen=True)
class EncodePlan:
    """One encode at one rate, decided before seeing the pixels: the same for every image of one shape and
    request, which is what lets a batch share its training phases."""

    request: EncodeRequest
    width: int
    height: int
    channels: int
    colour: str
    bpp: float
    budget: int  # bytes the blob may take
    model: ModelConfig  # the first attempt's network (smaller ones follow if it cannot fit the budget)
    levels: int  # the table's Q: the quantizers' plan, and the level search's first guess
    phases: tuple[Phase, ...]
    seed: int = 0
    fixed_levels: bool = False  # Q = levels with no search (the table fitting)

    def phase(self, kind: PhaseKind) -> Phase | None:
        return next((p for p in self.phases if p.kind == kind), None)

    def steps(self, kind: PhaseKind) -> int:
        p = self.phase(kind)
        return 0 if p is None else p.steps

    @property
    def total_steps(self) -> int:
        """What progress counts to: the steps of the training phases of one attempt."""
        return sum(p.steps for p in self.phases if p.trains)

    def rows(self, phase: Phase) -> int | None:
        """Rows each step of `phase` sees (None: all)."""
        return rows_for(phase.row_share, self.height)

    def cols(self, phase: Phase) -> int | None:
        return rows_for(phase.col_share, self.width)

    def work(self, phase: Phase) -> float:
        """`phase`'s full-image step equivalents."""
        return phase.steps * (self.rows(phase) or self.height) / self.height * (self.cols(phase) or self.width) / \
            self.width

    def progress_at(self, kind: PhaseKind, step: int) -> float:
        """The fraction of one attempt's time done at `step` of phase `kind`: the training phases weighted by
        their work, so that a fraction of the progress is a fraction of the time (the ETA's premise)."""
        weights = [(p.kind, self.work(p)) for p in self.phases if p.trains]
        total = sum(w for _, w in weights) or 1.0
        done = 0.0
        for k, w in weights:
            p = self.phase(k)
            if k == kind:
                return (done + w * min(1.0, step / max(1, p.steps if p else 1))) / total
            done += w
        return done / total

    def seconds(self, seconds_per_pixel_neuron: float = CPU_SECONDS_PER_PIXEL_NEURON) -> float:
        """Expected wall time of the encode, a quality target's retries included."""
        factor = PSNR_ATTEMPT_FACTOR if self.request.psnr is not None else 1.0
        return factor * self.attempt_seconds(seconds_per_pixel_neuron)

    def attempt_seconds(self, seconds_per_pixel_neuron: float = CPU_SECONDS_PER_PIXEL_NEURON) -> float:
        """Expected wall time of one attempt (each hidden layer counted as costing what the first does: an
        upper bound)."""
        step = seconds_per_pixel_neuron * self.width * self.height * self.model.input_width * len(self.model.hidden)
        training = self._training()
        return OVERHEAD_SECONDS + step * sum(self.work(p) for p in training) + \
            STEP_OVERHEAD_SECONDS * sum(p.steps for p in training)

    def full_steps(self) -> float:
        """Full-image step equivalents of one attempt, the retune after fine-tuning counted as `seconds` does."""
        return sum(self.work(p) for p in self._training())

    def _training(self) -> list[Phase]:
        finish = self.phase("finish")
        retune = [replace(finish, kind="qat", steps=int(finish.steps * RETUNE_WEIGHT))] if finish else []
        return [p for p in self.phases if p.trains] + retune

    @property
    def batch_key(self) -> str:
        """Encodes that may share one batch: images of one shape with one request."""
        return f"{self.width}x{self.height}x{self.channels}|" + json.dumps(self.request.canonical(), sort_keys=True)

    def at_rate(self, bpp: float) -> EncodePlan:
        """The same request's plan at another rate (a quality target's next attempt)."""
        return resolve(self.request, self.width, self.height, self.channels, seed=self.seed, bpp=bpp,
                       overrides=Overrides(colour=self.colour, phases=self.phases))

    def with_network(self, net_width: int) -> EncodePlan:
        """The same plan with a narrower network (the first could not fit the budget)."""
        return replace(self, model=default_config(self.width, self.height, self.channels, net_width,
                                                  len(self.model.hidden)))


@dataclass(frozen=True)
class Overrides:
    """What benchmarks and the table fitting set instead of the request's and the table's choices."""

    colour: str | None = None  # the network's colour space (default: rgb, or gray for one channel)
    phases: tuple[Phase, ...] | None = None
    net_width: int | None = None
    depth: int | None = None
    levels: int | None = None  # a fixed Q instead of the level search


def resolve(request: EncodeRequest, width: int, height: int, channels: int, *, seed: int = 0,
            bpp: float | None = None, overrides: Overrides = Overrides()) -> EncodePlan:
    """The plan of `request` for a width×height image of `channels`; `bpp` is the encoder's own later
    attempts' rate (a quality target's)."""
    colour, phases, net_width, depth, levels = (overrides.colour, overrides.phases, overrides.net_width,
                                                overrides.depth, overrides.levels)
    colour = colour or ("gray" if channels == 1 else "rgb")  # checked against the channels by the encoder
    bpp = first_bpp(request, width, height) if bpp is None else bpp
    rc = table.plan_for_bpp(bpp, width, height, channels)
    model = default_config(width, height, channels, net_width or rc.width, depth or rc.depth)
    return EncodePlan(request=request, width=width, height=height, channels=channels, colour=colour, bpp=bpp,
                      budget=rc.target_bytes, model=model, levels=levels or rc.levels,
                      phases=phases or preset(request.effort, request.steps), seed=seed,
                      fixed_levels=levels is not None)
