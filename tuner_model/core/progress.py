"""An encode's progress, one shape from the training loop to the CLI's bar and the worker's heartbeat, and the
ETA rule both use. Pure (no torch): the worker's parent process imports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """`step` of `total` planned steps, in `phase` (fit, qat, ...): monotonic over a whole encode, its retries
    included, and proportional to its time (the steps are weighted by the pixels each sees)."""

    phase: str
    step: int
    total: int
    loss: float
    psnr: float  # of the latest step's pixels, in dB (an estimate of the training PSNR)

    @property
    def fraction(self) -> float:
        return self.step / max(1, self.total)


# No ETA until an encode is this far along or has run this long: its first steps alone say too little.
ETA_MIN_PROGRESS, ETA_MIN_SECONDS = 0.02, 3.0


def seconds_left(elapsed: float, frac: float) -> float | None:
    """Seconds left of an encode that is `frac` done after `elapsed` seconds: progress is proportional to
    time, so the rest takes elapsed·(1 − frac)/frac. None until there is enough of either to go on. The
    worker's `eta_s` and the CLI's progress bar both use it."""
    if frac <= 0 or (frac < ETA_MIN_PROGRESS and elapsed < ETA_MIN_SECONDS):
        return None
    return max(0.0, elapsed * (1 - frac) / frac)
