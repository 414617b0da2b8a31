"""The fitting side of a run: the one worker module that imports torch and the encoder. Only the prefork
child that fits imports it (worker/run.py, inside the task): a CUDA context created in the parent would
poison every forked child (SERVICE_NOTES §2.1).

`fit` is a function of the images and their plan (service/estimate.job_plan): it yields each image's outcome
as its blob is ready and knows nothing of jobs, records or storage; worker/run.py stores and records what it yields, and
cancels an image through its member check (core/stop.py, by image index)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from celery.exceptions import SoftTimeLimitExceeded

from service.settings import Settings
from tuner_model.core.device import resolve_device
from tuner_model.core.errors import FitCancelled, TunerError
from tuner_model.core.stop import member_check, stop_when
from tuner_model.rate.encode import Outcome, iter_encode
from tuner_model.rate.plan import EncodePlan

log = logging.getLogger("tuner.worker")

ImageProgress = Callable[[int, Any], None]  # (image index, the encoder's progress report)


def set_torch_threads(n: int) -> None:
    """Each prefork child's share of the CPU (called when the child starts)."""
    torch.set_num_threads(n)


def batching_applies(settings: Settings) -> bool:
    if settings.fit_batch_on_cpu:
        return True
    try:
        return resolve_device(settings.fit_device).type == "cuda"
    except TunerError:  # e.g. CUDA asked for and absent: each fit reports that itself
        return False


def fit(images: Sequence[np.ndarray], plan: EncodePlan, device: str,
        progress: ImageProgress | None = None) -> Iterator[tuple[int, Outcome]]:
    """Encodes `images` (one shape, one request; one image too) as one batch, yielding (index, outcome) as
    each blob is ready: exactly one outcome per image, in any order. An image's own error, cancellation
    (FitCancelled) included, is its outcome and the others go on. Should the batched path itself break (a
    bug, a device error), the images not yet yielded are encoded one at a time rather than all failed; an
    error encoding one image alone is that image's outcome. Only the worker's soft time limit (and what is
    not an Exception) propagates."""
    done: set[int] = set()
    try:
        for i, outcome in iter_encode(images, plan, progress, device):
            done.add(i)
            yield i, outcome
    except SoftTimeLimitExceeded:
        raise
    except Exception as e:  # noqa: BLE001 - whatever broke, every image still gets an outcome
        if len(images) == 1:
            yield 0, _failed(e)
            return
        log.exception("batched fit of %d images failed; fitting them one at a time", len(images))
        for i in range(len(images)):
            if i not in done:
                yield i, _alone(images[i], i, plan, device, progress)


def _alone(image: np.ndarray, index: int, plan: EncodePlan, device: str,
           progress: ImageProgress | None) -> Outcome:
    """Image `index` of a broken batch, encoded on its own under the caller's member check at its index in
    the batch, and reporting progress there (the caller's bar, which never goes backwards)."""
    outer = member_check()
    if outer is not None and outer(index):  # cancelled while the batch ran: nothing to fit
        return Outcome(error=FitCancelled("cancelled"))
    member = None if outer is None else (lambda _k: outer(index))
    report = None if progress is None else (lambda _k, p: progress(index, p))
    try:
        with stop_when(member=member):
            outcomes = [outcome for _k, outcome in iter_encode([image], plan, report, device)]
        return outcomes[0]
    except SoftTimeLimitExceeded:
        raise
    except Exception as e:  # noqa: BLE001 - this image's trouble: the others go on
        return _failed(e)


def _failed(error: Exception) -> Outcome:
    """An outcome for an error the encoder raised rather than returned; worker/run.py records a TunerError
    with its message and anything else as an internal error (logged there with its traceback)."""
    return Outcome(error=error, batch_size=1)
