"""How long a job's encode will take, judged at upload from the image's size and the job's parameters, so
that the API refuses what the worker's soft time limit would kill. Pure arithmetic: tuner_model.rate's effort,
request and table modules import no torch (the encoder does, and the API never imports it)."""

from __future__ import annotations

from tuner_model.rate import table as ratecontrol
from tuner_model.rate.effort import CPU_SECONDS_PER_PIXEL_NEURON, EFFORT_MIN, effort_plan, estimate_seconds
from tuner_model.rate.request import DEFAULT_BPP, EncodeRequest

from .settings import Settings

# A GPU worker's speed when the setting leaves it open: 20x the 2-core CPU. A guess, not a measurement
# (docs/PERFORMANCE.md has no GPU figures yet): a 768x512 step at width 264 is 0.19 s on the CPU, and on a
# datacenter GPU its few large matmuls take milliseconds, so for the large images whose fits come near the
# time limit 20x is likely modest and errs toward refusing; small images are bound by kernel launches and
# gain less, but they fit in seconds anyway. Measure it (tuner bench speed --device cuda) and set
# TUNER_FIT_SECONDS_PER_PIXEL_NEURON.
CUDA_SPEEDUP = 20.0
# A psnr target may encode up to encoder.PSNR_ATTEMPTS (3) times when the measured PSNR falls short; the
# retries are usually needed once at most, so two attempts' time is budgeted.
PSNR_ATTEMPT_FACTOR = 2.0
# The estimate times this must fit in the soft time limit: it is a model of the time, not a measurement.
SAFETY_FACTOR = 1.5


def seconds_per_pixel_neuron(settings: Settings) -> float:
    """The setting, else the CPU figure, or the CUDA guess when fit_device names CUDA. "auto" counts as the
    CPU: resolving it would import torch (and the API's machine need not be the workers')."""
    if settings.fit_seconds_per_pixel_neuron is not None:
        return settings.fit_seconds_per_pixel_neuron
    if settings.fit_device.strip().lower().startswith("cuda"):
        return CPU_SECONDS_PER_PIXEL_NEURON / CUDA_SPEEDUP
    return CPU_SECONDS_PER_PIXEL_NEURON


def first_bpp(params: EncodeRequest) -> float:
    """The rate of the first encode attempt, as the encoder picks it."""
    if params.bpp is not None:
        return params.bpp
    if params.psnr is not None:
        return ratecontrol.bpp_for_psnr(params.psnr)
    return DEFAULT_BPP


def planned_steps(params: EncodeRequest, settings: Settings) -> int:
    """The steps the encoder's progress counts for one attempt: the float fit's and the fine-tuning's."""
    plan = effort_plan(params.effort, params.steps or settings.default_steps)
    return plan.steps + plan.qat_steps


def estimate_fit_seconds(width: int, height: int, channels: int, params: EncodeRequest, settings: Settings) -> float:
    """Expected wall seconds of the job's encode on a worker configured by `settings`."""
    rc = ratecontrol.plan_for_bpp(first_bpp(params), width, height, channels)
    plan = effort_plan(params.effort, params.steps or settings.default_steps)
    seconds = estimate_seconds(width, height, rc.width, plan, seconds_per_pixel_neuron(settings), rc.depth)
    return seconds * (PSNR_ATTEMPT_FACTOR if params.psnr is not None else 1.0)


def over_time_limit(width: int, height: int, channels: int, params: EncodeRequest, settings: Settings) -> str | None:
    """Why the job would run past the worker's soft time limit (a message for the client), or None."""
    seconds = estimate_fit_seconds(width, height, channels, params, settings)
    limit = settings.soft_time_limit_s
    if seconds * SAFETY_FACTOR <= limit:
        return None
    # Only what can still go down: at effort 1 there is no lower effort to suggest.
    levers = [*([f"the effort (now {params.effort})"] if params.effort > EFFORT_MIN else []),
              *(["the steps"] if params.steps is not None else []),
              "the psnr target" if params.psnr is not None else "the bpp"]
    what = levers[0] if len(levers) == 1 else f"{', '.join(levers[:-1])} or {levers[-1]}"
    return (f"this encode is estimated at {seconds / 60:.1f} minutes ({seconds:.0f} s) on the workers, and with "
            f"a safety factor of {SAFETY_FACTOR} that exceeds their time limit of {limit / 60:.1f} minutes "
            f"({limit} s); lower {what}, or send a smaller image")
