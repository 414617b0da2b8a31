"""A job's encode plan, resolved in one place for the API (admission, the estimate, the job row) and the worker
(the run): the request with this service's defaults, through the library's `resolve`. And how long the plan
will take on the workers, so that the API refuses what the worker's soft time limit would kill. Pure (no
torch): tuner_model.rate's plan, effort, request and table modules import none (the encoder does, and the API
never imports it)."""

from __future__ import annotations

from tuner_model.rate.effort import EFFORT_MIN
from tuner_model.rate.plan import CPU_SECONDS_PER_PIXEL_NEURON, EncodePlan, resolve
from tuner_model.rate.request import EncodeRequest

from .settings import Settings

# A GPU worker's speed when the setting leaves it open: 20x the 2-core CPU. A guess, not a measurement
# (docs/PERFORMANCE.md has no GPU figures yet): a 768x512 step at width 264 is 0.19 s on the CPU, and on a
# datacenter GPU its few large matmuls take milliseconds, so for the large images whose fits come near the
# time limit 20x is likely modest and errs toward refusing; small images are bound by kernel launches and
# gain less, but they fit in seconds anyway. Measure it (tuner bench speed --device cuda) and set
# TUNER_FIT_SECONDS_PER_PIXEL_NEURON.
CUDA_SPEEDUP = 20.0
# The estimate times this must fit in the soft time limit: it is a model of the time, not a measurement.
SAFETY_FACTOR = 1.5


def job_plan(request: EncodeRequest, width: int, height: int, channels: int, settings: Settings) -> EncodePlan:
    """The plan a job's encode runs: the request as stored on the job, this service's default steps when it
    names none (TUNER_DEFAULT_STEPS; the job keeps the request as sent)."""
    if request.steps is None and settings.default_steps is not None:
        request = request.model_copy(update={"steps": settings.default_steps})
    return resolve(request, width, height, channels)


def seconds_per_pixel_neuron(settings: Settings) -> float:
    """The setting, else the CPU figure, or the CUDA guess when fit_device names CUDA. "auto" counts as the
    CPU: resolving it would import torch (and the API's machine need not be the workers')."""
    if settings.fit_seconds_per_pixel_neuron is not None:
        return settings.fit_seconds_per_pixel_neuron
    if settings.fit_device.strip().lower().startswith("cuda"):
        return CPU_SECONDS_PER_PIXEL_NEURON / CUDA_SPEEDUP
    return CPU_SECONDS_PER_PIXEL_NEURON


def estimate_fit_seconds(plan: EncodePlan, settings: Settings) -> float:
    """Expected wall seconds of the job's encode on a worker configured by `settings`."""
    return plan.seconds(seconds_per_pixel_neuron(settings))


def over_time_limit(plan: EncodePlan, settings: Settings) -> str | None:
    """Why the job would run past the worker's soft time limit (a message for the client), or None."""
    seconds = estimate_fit_seconds(plan, settings)
    limit = settings.soft_time_limit_s
    if seconds * SAFETY_FACTOR <= limit:
        return None
    request = plan.request
    # Only what can still go down: at effort 1 there is no lower effort to suggest.
    levers = [*([f"the effort (now {request.effort})"] if request.effort > EFFORT_MIN else []),
              *(["the steps"] if request.steps is not None else []),
              "the psnr target" if request.psnr is not None else "the bpp"]
    what = levers[0] if len(levers) == 1 else f"{', '.join(levers[:-1])} or {levers[-1]}"
    return (f"this encode is estimated at {seconds / 60:.1f} minutes ({seconds:.0f} s) on the workers, and with "
            f"a safety factor of {SAFETY_FACTOR} that exceeds their time limit of {limit / 60:.1f} minutes "
            f"({limit} s); lower {what}, or send a smaller image")
