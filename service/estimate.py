"""A job's encode plan, resolved in one place for the API (admission, the estimate, the job row) and the worker
(the run): the request with this service's defaults, through the library's `plan_image` (one network, or
tiles above the working size). And how long the plan will take on the workers, so that the API refuses what
the workers' soft time limit would kill and tells the client when to expect the blob. Pure (no torch):
tuner_model.rate's plan, tile_plan, effort, request and table modules import none (the encoder does, and the
API never imports it)."""

from __future__ import annotations

from tuner_model.rate.effort import EFFORT_MIN
from tuner_model.rate.plan import CPU_SECONDS_PER_PIXEL_NEURON, EncodePlan
from tuner_model.rate.request import EncodeRequest
from tuner_model.rate.tile_plan import TiledPlan, plan_image

from .records import Database, Job
from .settings import Settings

JobPlan = EncodePlan | TiledPlan

# A GPU worker's speed when the setting leaves it open: 20x the 2-core CPU. A guess, not a measurement
# (docs/PERFORMANCE.md has no GPU figures yet): a 768x512 step at width 264 is 0.19 s on the CPU, and on a
# datacenter GPU its few large matmuls take milliseconds, so for the large images whose fits come near the
# time limit 20x is likely modest and errs toward refusing; small images are bound by kernel launches and
# gain less, but they fit in seconds anyway. Measure it (tuner bench speed --device cuda) and set
# TUNER_FIT_SECONDS_PER_PIXEL_NEURON.
CUDA_SPEEDUP = 20.0
# The estimate times this must fit in the soft time limit: it is a model of the time, not a measurement.
SAFETY_FACTOR = 1.5


def job_plan(request: EncodeRequest, width: int, height: int, channels: int, settings: Settings) -> JobPlan:
    """The plan a job's encode runs: the request as stored on the job, this service's default steps when it
    names none (TUNER_DEFAULT_STEPS; the job keeps the request as sent); tiles above the working size
    (TUNER_TILE_WORKING_SIZE)."""
    if request.steps is None and settings.default_steps is not None:
        request = request.model_copy(update={"steps": settings.default_steps})
    return plan_image(request, width, height, channels, working=settings.tile_working_size)


def plan_of_job(job: Job, shape: tuple[int, ...], settings: Settings) -> JobPlan:
    """The plan a stored job runs on the worker: its stored request (a job queued before `effort` existed gets
    the default) and the decoded image's shape, resolved as the API resolved it to admit the job."""
    request = EncodeRequest(**{k: v for k, v in (job.params or {}).items() if v is not None})
    height, width, channels = shape
    return job_plan(request, width, height, channels, settings)


def seconds_per_pixel_neuron(settings: Settings) -> float:
    """The setting, else the CPU figure, or the CUDA guess when fit_device names CUDA. "auto" counts as the
    CPU: resolving it would import torch (and the API's machine need not be the workers')."""
    if settings.fit_seconds_per_pixel_neuron is not None:
        return settings.fit_seconds_per_pixel_neuron
    if settings.fit_device.strip().lower().startswith("cuda"):
        return CPU_SECONDS_PER_PIXEL_NEURON / CUDA_SPEEDUP
    return CPU_SECONDS_PER_PIXEL_NEURON


def estimate_fit_seconds(plan: JobPlan, settings: Settings, workers: int = 1) -> float:
    """Expected wall seconds until the job's blob is ready, once a worker takes it: one fit, or the tiles in
    waves over `workers` fits at a time, then their assembly. Linear in the pixels either way."""
    speed = seconds_per_pixel_neuron(settings)
    if isinstance(plan, TiledPlan):
        return plan.seconds(speed, parallel=workers)
    return plan.seconds(speed)


def fit_slots(db: Database, settings: Settings) -> int:
    """How many fits the workers run at once now: the worker processes that beat recently, each running
    TUNER_WORKER_CONCURRENCY fits (at least one: a job waits for a worker to start)."""
    return max(1, db.live_workers(settings.stale_after_s) * settings.worker_concurrency)


def task_seconds(plan: JobPlan, settings: Settings) -> float:
    """The longest single task of the job (what the soft time limit bounds): the fit, or one tile's fit."""
    speed = seconds_per_pixel_neuron(settings)
    return plan.tile_seconds(speed) if isinstance(plan, TiledPlan) else plan.seconds(speed)


def over_time_limit(plan: JobPlan, settings: Settings) -> str | None:
    """Why the job would run past the workers' soft time limit (a message for the client that names an effort
    that would not, where one does), or None. A job fitted as tiles is bounded by one tile's task: any image
    size is admitted at a rate and effort one tile can meet."""
    seconds = task_seconds(plan, settings)
    limit = settings.soft_time_limit_s
    if seconds * SAFETY_FACTOR <= limit:
        return None
    request = plan.request
    what = "one tile's fit" if isinstance(plan, TiledPlan) else "this encode"
    lower = _lower_effort_that_fits(plan, settings)
    if lower is not None:
        advice = f"effort {lower[0]} would take about {lower[1] / 60:.1f} minutes"
    else:
        levers = [*(["the steps"] if request.steps is not None else []),
                  "the psnr target" if request.psnr is not None else "the bpp"]
        advice = f"lower {' or '.join(levers)}, or send a smaller image"
    return (f"{what} is estimated at {seconds / 60:.1f} minutes ({seconds:.0f} s) on the workers, and with "
            f"a safety factor of {SAFETY_FACTOR} that exceeds their time limit of {limit / 60:.1f} minutes "
            f"({limit} s); {advice}")


def _lower_effort_that_fits(plan: JobPlan, settings: Settings) -> tuple[int, float] | None:
    """The highest effort below the request's whose longest task fits the time limit, and that task's
    estimated seconds; None if none does."""
    for effort in range(plan.request.effort - 1, EFFORT_MIN - 1, -1):
        request = plan.request.model_copy(update={"effort": effort})
        seconds = task_seconds(job_plan(request, plan.width, plan.height, plan.channels, settings), settings)
        if seconds * SAFETY_FACTOR <= settings.soft_time_limit_s:
            return effort, seconds
    return None
