"""The encoder's effort setting (like AVIF's speed or WebP's method) as data: each level is a preset, a list
of phases that one training loop runs, with the steps between them. Pure data (no torch): the API plans a
job with it before accepting the upload.

A preset is: a float fit (`fit`) from a fresh network, on a random sub-grid of rows and columns each step
(a quarter of the pixels costs a quarter of a full step, and the separable grid structure is kept); a level
search (`levels`: the largest number of quantization levels Q whose blob fits the budget); the
quantization-aware fine-tuning at that Q (`qat`); and `finish` (search Q again on the tuned weights, fine-tune
again briefly if it landed lower, snap, measure, write the blob). The levels were chosen by measurement at
768×512 (docs/PERFORMANCE.md, "Effort"); what an encode takes now is in docs/PERFORMANCE.md's current numbers.
The top levels are for GPU workers and benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from tuner_model.core.errors import ConfigError

EFFORT_MIN, EFFORT_MAX = 1, 9
DEFAULT_EFFORT = 4
MIN_BATCH_ROWS = 128  # an image of at most this many rows always trains on all of them
QAT_FRACTION = 0.2  # fine-tuning steps as a share of the fit's, when the caller sets the steps
MAX_QAT_STEPS = 500

PhaseKind = Literal["fit", "levels", "qat", "finish"]


@dataclass(frozen=True)
class Phase:
    """One phase of an encode. `fit` and `qat` are runs of the training loop (steps, Adam, a cosine schedule
    after a linear warm-up, a share of the rows and columns each step sees); `levels` and `finish` are the
    steps between them (finish's `steps` are the fine-tuning it adds when its search lands on a lower Q)."""

    kind: PhaseKind
    steps: int = 0
    lr: float = 0.0
    warmup: int = 0
    final_lr: float = 1.0  # the cosine ends at lr·final_lr
    row_share: float = 1.0
    col_share: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    clip: float | None = None  # each network's gradient norm is scaled down to this
    phase_lr_mult: float = 1.0  # the input phases' lr over the base lr

    @property
    def trains(self) -> bool:
        return self.kind in ("fit", "qat")


# The codec's float fit (not the paper benchmark's plain Adam): lr 2e-3 (+0.16 dB over 1e-3), Adam β2 0.99,
# gradient norm clipped at 0.02 and phases at 10× lr measured +0.10 dB through this encoder (kodim01/05/07/23
# at 192×128, 0.5 and 1 bpp, 2 seeds, 600 steps: 15 of 16 encodes better; docs/CODEC.md).
FIT_LR, FIT_WARMUP, FIT_FINAL_LR = 2e-3, 50, 0.02
CODEC_BETAS, CODEC_CLIP, CODEC_PHASE_LR = (0.9, 0.99), 0.02, 10.0
QAT_LR, QAT_FINAL_LR = 2e-4, 0.05


def fit_phase(steps: int, row_share: float = 1.0, col_share: float = 1.0) -> Phase:
    return Phase("fit", steps, FIT_LR, FIT_WARMUP, FIT_FINAL_LR, row_share, col_share, CODEC_BETAS, CODEC_CLIP,
                 CODEC_PHASE_LR)


def qat_phase(steps: int, row_share: float = 1.0) -> Phase:
    return Phase("qat", steps, QAT_LR, 0, QAT_FINAL_LR, row_share)


def finish_phase(qat_steps: int, row_share: float = 1.0) -> Phase:
    # Weights tuned to Q's grid lose ~2 dB rounded to a coarser one (measured at 192×128, 2 bpp, 2 of 4
    # seeds), so when the second search lands lower they are fine-tuned again, for half as long.
    return Phase("finish", max(1, qat_steps // 2) if qat_steps else 0, QAT_LR, 0, QAT_FINAL_LR, row_share)


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


def preset(level: int = DEFAULT_EFFORT, steps: int | None = None) -> tuple[Phase, ...]:
    """The phases of an effort level; `steps` (advanced) replaces its float steps, and the fine-tuning then
    takes QAT_FRACTION of them."""
    if not isinstance(level, int) or not EFFORT_MIN <= level <= EFFORT_MAX:
        raise ConfigError(f"effort must be an integer in {EFFORT_MIN}..{EFFORT_MAX}, got {level!r}")
    n, frac, n_qat, qat_frac, col_frac = _LEVELS[level]
    if steps is not None:
        n, n_qat = steps, qat_steps_for(steps)
    phases = [fit_phase(n, frac, col_frac), Phase("levels")]
    if n_qat:
        phases.append(qat_phase(n_qat, qat_frac))
    return (*phases, finish_phase(n_qat, qat_frac))


def rows_for(fraction: float, height: int) -> int | None:
    """Rows per step for a share of an image's rows; None (every row) when that is all or nearly."""
    rows = max(MIN_BATCH_ROWS, math.ceil(fraction * height))
    return None if rows >= height else rows
