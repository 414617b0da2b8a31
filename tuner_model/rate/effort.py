"""The encoder's effort setting (like AVIF's speed or WebP's method): how much fitting an encode does,
and what that costs. Pure data and arithmetic (no torch): the API sizes a job's time with it before
accepting the upload.

An effort fixes the float fit's steps and the share of the image's rows each step sees (stochastic over
rows: a quarter of the rows costs a quarter of a full step, and the separable grid structure is kept),
and the quantization-aware fine-tuning's steps and rows. The levels were chosen by measurement at
768×512 (docs/PERFORMANCE.md, "Effort"); what an encode takes now is in docs/PERFORMANCE.md's current
numbers and the README's "What to expect" (timings are not kept here, where they go stale). The top levels
are for GPU workers and benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuner_model.core.errors import ConfigError

EFFORT_MIN, EFFORT_MAX = 1, 9
DEFAULT_EFFORT = 4
MIN_BATCH_ROWS = 128  # an image of at most this many rows always trains on all of them
QAT_FRACTION = 0.2  # fine-tuning steps as a share of the fit's, when the caller sets the steps
MAX_QAT_STEPS = 500


@dataclass(frozen=True)
class EffortPlan:
    level: int
    steps: int  # float-fit steps
    row_fraction: float  # share of the rows each float step sees
    qat_steps: int
    qat_row_fraction: float
    col_fraction: float = 1.0  # share of the columns each float step sees (with the rows: a random sub-grid)

    def batch_rows(self, height: int) -> int | None:
        return rows_for(self.row_fraction, height)

    def batch_cols(self, width: int) -> int | None:
        return rows_for(self.col_fraction, width)

    def qat_batch_rows(self, height: int) -> int | None:
        return rows_for(self.qat_row_fraction, height)

    def work(self, width: int, height: int) -> float:
        """Full-image step equivalents of one encode attempt (the fit, the fine-tuning and the shorter
        retune the encoder may add when the level search lands lower after fine-tuning)."""
        def share(n: int | None, of: int) -> float:
            return 1.0 if n is None else n / of

        fit = share(self.batch_rows(height), height) * share(self.batch_cols(width), width)
        return self.steps * fit + 1.5 * self.qat_steps * share(self.qat_batch_rows(height), height)


# level: (float steps, their row share, QAT steps, their row share, the float steps' column share)
_LEVELS: dict[int, tuple[int, float, int, float, float]] = {
    1: (300, 0.5, 20, 1.0, 0.5),
    2: (500, 0.5, 30, 1.0, 0.5),
    3: (900, 0.5, 40, 1.0, 0.5),
    4: (1400, 0.5, 60, 1.0, 0.5),
    5: (2000, 0.5, 100, 1.0, 0.5),
    6: (2000, 1.0, 150, 1.0, 1.0),
    7: (3000, 1.0, 200, 1.0, 1.0),
    8: (5000, 1.0, 300, 1.0, 1.0),
    9: (8000, 1.0, 500, 1.0, 1.0),
}


def qat_steps_for(steps: int) -> int:
    """Fine-tuning steps after a fit of `steps` set by the caller: QAT_FRACTION of them, 10 to MAX_QAT_STEPS."""
    return min(MAX_QAT_STEPS, max(10, int(steps * QAT_FRACTION)))


def effort_plan(level: int = DEFAULT_EFFORT, steps: int | None = None) -> EffortPlan:
    """The plan of an effort level; `steps` (advanced) replaces its float steps, and the fine-tuning then
    takes QAT_FRACTION of them."""
    if not isinstance(level, int) or not EFFORT_MIN <= level <= EFFORT_MAX:
        raise ConfigError(f"effort must be an integer in {EFFORT_MIN}..{EFFORT_MAX}, got {level!r}")
    n, frac, n_qat, qat_frac, col_frac = _LEVELS[level]
    if steps is not None:
        n, n_qat = steps, qat_steps_for(steps)
    return EffortPlan(level, n, frac, n_qat, qat_frac, col_frac)


def rows_for(fraction: float, height: int) -> int | None:
    """Rows per step for a share of an image's rows; None (every row) when that is all or nearly."""
    rows = max(MIN_BATCH_ROWS, math.ceil(fraction * height))
    return None if rows >= height else rows


# Seconds of one full-image grid step per pixel per hidden neuron on a 2-core CPU, from a measured encode:
# kodim01 at 1 bpp (width 264, low block L = 25), effort 4, took 638 s on the 2-core AMD EPYC (AVX2) of
# 2026-12-01, i.e. 1.37e-8 with the overheads below (docs/PERFORMANCE.md). A 2-core Xeon with AVX-512 ran
# L = 10 steps 7x faster (1.9e-9): this errs towards refusing, which a worker's setting can undo
# (TUNER_FIT_SECONDS_PER_PIXEL_NEURON).
CPU_SECONDS_PER_PIXEL_NEURON = 1.37e-8
OVERHEAD_SECONDS = 5.0  # level searches, snapping, PSNR, blob
STEP_OVERHEAD_SECONDS = 0.004  # per step, whatever its size (a tiny image's steps are all overhead)


def estimate_seconds(width: int, height: int, net_width: int, plan: EffortPlan,
                     seconds_per_pixel_neuron: float = CPU_SECONDS_PER_PIXEL_NEURON, depth: int = 1) -> float:
    """Expected wall time of one encode attempt of a width×height image with a network of `depth` hidden
    layers net_width wide (each deeper layer counted as costing what the first does: an upper bound)."""
    step = seconds_per_pixel_neuron * width * height * net_width * depth
    steps = plan.steps + 1.5 * plan.qat_steps
    return OVERHEAD_SECONDS + step * plan.work(width, height) + STEP_OVERHEAD_SECONDS * steps


# No ETA until an encode is this far along or has run this long: its first steps alone say too little.
ETA_MIN_PROGRESS, ETA_MIN_SECONDS = 0.02, 3.0


def seconds_left(elapsed: float, frac: float) -> float | None:
    """Seconds left of an encode that is `frac` done after `elapsed` seconds: the encoder's progress
    fractions are proportional to its time, so the rest takes elapsed·(1 − frac)/frac. None until there is
    enough of either to go on. The worker's `eta_s` and the CLI's progress bar both use it."""
    if frac <= 0 or (frac < ETA_MIN_PROGRESS and elapsed < ETA_MIN_SECONDS):
        return None
    return max(0.0, elapsed * (1 - frac) / frac)
