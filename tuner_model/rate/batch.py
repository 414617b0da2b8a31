"""`encode_batch`: several images of one shape and one request, their float fits run as one `fit_batch`
and their fine-tuning as one `qat_finetune_batch` (each network at the Q of its own level search); each
image then goes through the rest of the pipeline on its own, so each blob equals encoding it alone up to
float rounding. Worth it on a GPU, where one step of K stacked networks costs about one step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tuner_model.codec.quant import QuantSpec, plan
from tuner_model.core import colour as colour_mod
from tuner_model.core.errors import ConfigError, FitCancelled, Stopped, TunerError
from tuner_model.core.stop import member_check, stop_when
from tuner_model.models.fitted import FittedImage
from tuner_model.rate.encode import first_bpp, first_slice, rate_options, reach_target, reporter_for, sliced
from tuner_model.rate.pipeline import (
    Cancel,
    FirstFit,
    OverBudget,
    RateProgress,
    RateSetup,
    compile_if_worth_it,
    encode_rate,
    first_levels,
    qat_progress,
    rate_setup,
)
from tuner_model.rate.request import EncodeSettings
from tuner_model.train.batched import fit_batch
from tuner_model.train.fit import FitProgress
from tuner_model.train.qat import qat_finetune_batch


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


def _member_cancels(n: int) -> list[Cancel | None]:
    """One check per image: the caller's member check (core/stop.py) at that image's index."""
    check = member_check()
    if check is None:
        return [None] * n
    return [lambda i=i: check(i) for i in range(n)]


def _is_cancelled(cancel: Cancel | None) -> bool:
    return cancel is not None and cancel()


def _batched_float_fit(setup: RateSetup, images: Sequence[np.ndarray], progress: Sequence[RateProgress],
                       cancels: Sequence[Cancel | None]) -> list[FirstFit | None]:
    """The first attempt's float fit of every image as one `fit_batch` (None for a cancelled image)."""
    config = setup.config(setup.net_width)

    def member_progress(k: int, p: FitProgress) -> None:
        progress[k](p.step / setup.steps * setup.fit_share, p.loss, p.psnr)

    try:
        fits = fit_batch(images, config, setup.fit_options(), colour=setup.colour,
                         member_cancelled=lambda k: _is_cancelled(cancels[k]), member_progress=member_progress)
    except FitCancelled:
        return [None] * len(images)
    return [None if f is None else FirstFit(setup.unquantized(config, f.model), float(f.meta["seconds"]))
            for f in fits]


_FirstStage = FirstFit | TunerError | None  # ready for the rest of the pipeline, failed, or cancelled


def _batched_fine_tune(setup: RateSetup, images: Sequence[np.ndarray], firsts: list[FirstFit | None],
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
            first.levels = first_levels(setup, first.fitted)
            tuning.append(i)
        except OverBudget:
            pass
        except TunerError as e:
            out[i] = e
    if not setup.n_qat or not tuning:
        return out
    tuned = [firsts[i] for i in tuning]
    reports = [qat_progress(setup, progress[i]) for i in tuning]
    losses = qat_finetune_batch(
        [f.fitted.model for f in tuned], [colour_mod.forward(images[i], setup.colour) for i in tuning],
        [plan(f.fitted.model, QuantSpec(setup.q_plan).with_levels(f.levels)) for f in tuned],
        setup.qat_options(), progress=lambda k, step, loss: reports[k](step, loss),
        member_cancelled=lambda k: _is_cancelled(cancels[tuning[k]]))
    for i, f, loss in zip(tuning, tuned, losses, strict=True):
        f.fitted.model.cpu()
        if loss is None:
            out[i] = None
    return out


def iter_encode_batch(images: Sequence[np.ndarray], settings: EncodeSettings = EncodeSettings(),
                      progress: Callable[[int, FitProgress], None] | None = None) -> Iterator[tuple[int, BatchOutcome]]:
    """`encode_batch`, yielding (index, outcome) as each image's blob is ready: the float fit and the
    fine-tuning are shared, the second level search, snap and blob run image after image, so a caller
    can store the first results while the others finish."""
    if not images:
        return
    shape = images[0].shape
    if any(im.shape != shape for im in images):
        raise ConfigError("encode_batch needs images of one size and channel count")
    cancels = _member_cancels(len(images))
    bpp = first_bpp(shape, settings)
    setup = rate_setup(shape, rate_options(settings, bpp))
    compile_if_worth_it(setup, settings.plan)
    reporters = [reporter_for(settings, None if progress is None else functools.partial(progress, i))
                 for i in range(len(images))]
    shares = [sliced(r, *first_slice(settings)) for r in reporters]
    firsts = _batched_fine_tune(setup, images, _batched_float_fit(setup, images, shares, cancels), shares, cancels)
    for i, image in enumerate(images):
        first = firsts[i]
        if isinstance(first, TunerError):
            yield i, BatchOutcome(error=first, batch_size=len(images))
            continue
        if first is None or _is_cancelled(cancels[i]):
            yield i, BatchOutcome(error=FitCancelled("cancelled"), batch_size=len(images))
            continue
        try:
            with stop_when(lambda i=i: "cancelled" if _is_cancelled(cancels[i]) else None):
                encoded = encode_rate(setup, image, shares[i], first=first)
                fitted, blob = reach_target(image, settings, encoded, bpp, reporters[i])
        except Stopped as e:
            yield i, BatchOutcome(error=e if isinstance(e, FitCancelled) else FitCancelled(str(e)),
                                  batch_size=len(images))
            continue
        except TunerError as e:  # this image's own trouble (cancelled, a budget too small): the others go on
            yield i, BatchOutcome(error=e, batch_size=len(images))
            continue
        shared = fitted is first.fitted  # quantized in place: still the network from the batched fit
        yield i, BatchOutcome(fitted, blob, batch_size=len(images) if shared else 1)


def encode_batch(images: Sequence[np.ndarray], settings: EncodeSettings = EncodeSettings(),
                 progress: Callable[[int, FitProgress], None] | None = None) -> list[BatchOutcome]:
    """`encode` of several images of one shape with one request, the float fits run as one `fit_batch` and
    the fine-tuning as one `qat_finetune_batch` (each network at the Q of its own level search); each
    image goes through the same steps as `encode` alone (level search, QAT, search again, snap, PSNR,
    blob; a smaller network or a higher rate when needed), so each result matches `encode` of that image
    up to float rounding. `progress(index, p)` reports per image. The caller's member check
    (`core.stop.stop_when(member=...)`, by image index) cancels one image: its outcome is FitCancelled
    while the others go on; when every image is cancelled this raises FitCancelled."""
    outcomes: list[BatchOutcome] = [BatchOutcome()] * len(images)
    for i, outcome in iter_encode_batch(images, settings, progress):
        outcomes[i] = outcome
    if outcomes and all(o.cancelled for o in outcomes):
        raise FitCancelled("every image of the batch was cancelled")
    return outcomes
