"""Fitting several images at once: K TUNER networks held as batched weights (a leading K dimension,
torch.bmm), so one worker drains its queue with a few large kernels instead of many small ones.

The math mirrors `models.tuner.TunerNet` and `fit.fit` exactly: the same initial weights (each network
is built from `options.seed`), the same frozen frequencies, the same loss (each network's mean squared
error; the networks' losses are summed, and as their parameters are disjoint each gets exactly the
gradient it would get alone), Adam (elementwise, so stacking changes nothing) with the same parameter
groups, gradient-norm clipping per network (each network's own norm, as it would be alone), the same
learning-rate schedule, mini-batches and per-column clamp after every step. Only float rounding differs.

Networks the batched path does not cover (SIREN, FFM, learned bounds) are fitted one after another.
The loop is loop.py's, the step the objective's (the grid path for stacked TUNER networks too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from tuner_model.core import colour as colour_mod
from tuner_model.core.device import resolve_device
from tuner_model.core.errors import ConfigError, FitCancelled
from tuner_model.core.metrics import mse_to_psnr
from tuner_model.core.stop import stop_reason, stop_when
from tuner_model.models import ModelConfig, build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.models.stacked import BatchedTuner, batchable
from tuner_model.render.fitted import measure_psnr
from tuner_model.train.fit import FitOptions, FitProgress, fit_image, loop_options, make_objective
from tuner_model.train.loop import train


def fit_batch(images: Sequence[np.ndarray], config: ModelConfig, options: FitOptions = FitOptions(),
              progress: Callable[[FitProgress], None] | None = None, colour: str | None = None,
              member_cancelled: Callable[[int], bool] | None = None,
              member_progress: Callable[[int, FitProgress], None] | None = None) -> list[FittedImage | None]:
    """Fit one network of `config` to each image (all the same (H, W, C) shape), all at once on one device.
    Results match `image_model.fit_image` on each image with the same options up to float rounding.

    The caller's stop check (core/stop.py) stops the whole batch (FitCancelled). `member_cancelled(k)`,
    polled every step for each image k still fitting, drops that image alone: its result is None and the
    others go on exactly as before; when every image is dropped the fit raises FitCancelled.
    `member_progress(k, p)` reports each image's own loss alongside `progress`, which gets the mean."""
    if not images:
        return []
    shape = images[0].shape
    if any(im.shape != shape for im in images):
        raise ConfigError("fit_batch needs images of one size and channel count")
    h, w, c = shape
    colour = colour or ("gray" if c == 1 else "rgb")
    colour_mod.check(colour, c)
    if config.channels != c:
        raise ConfigError(f"the configuration has {config.channels} channels, the images {c}")
    if not batchable(config):
        return _fit_one_by_one(images, config, options, colour, progress, member_cancelled)

    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    nets = [build_model(config, seed=options.seed) for _ in images]
    model = BatchedTuner(nets).to(device).train()  # type: ignore[arg-type]
    targets = [colour_mod.forward(im, colour) for im in images]
    with torch.no_grad():  # fit._init_output_bias, per network
        model.out_bias.copy_(torch.stack([torch.as_tensor(t.reshape(-1, c).mean(axis=0, dtype=np.float64),
                                                          dtype=torch.float32) for t in targets]))
    objective = make_objective(model, targets, options, device, stacked=True)

    def report(step: int, live: list[int], losses: list[float]) -> None:
        if progress is not None:
            mean = sum(losses) / len(losses)
            progress(FitProgress("fit", step, options.steps, mean, mse_to_psnr(mean)))
        if member_progress is not None:
            for k, loss in zip(live, losses, strict=True):
                member_progress(k, FitProgress("fit", step, options.steps, loss, mse_to_psnr(loss)))

    result = train(model, objective, loop_options(options), stacked=True, progress=report,
                   member_cancelled=member_cancelled)
    live = [k for k, loss in enumerate(result.losses) if loss is not None]
    results: list[FittedImage | None] = [None] * len(images)
    for j, k in enumerate(live):
        net = model.unstack(j, options.seed)
        fitted = FittedImage(config, w, h, net, colour)
        fitted.meta.update(steps=options.steps, seconds=round(result.seconds, 3), device=str(device),
                           batch=len(images))
        fitted.meta["psnr"] = round(measure_psnr(fitted, images[k]), 4)
        results[k] = fitted
    return results


def _fit_one_by_one(images: Sequence[np.ndarray], config: ModelConfig, options: FitOptions, colour: str,
                    progress: Callable[[FitProgress], None] | None,
                    member_cancelled: Callable[[int], bool] | None) -> list[FittedImage | None]:
    """Architectures without a batched form: one fit after another, with the same cancellation contract."""
    results: list[FittedImage | None] = []
    for k, im in enumerate(images):
        def cancelled(k: int = k) -> str | None:
            return "cancelled" if member_cancelled is not None and member_cancelled(k) else None
        try:
            with stop_when(cancelled):
                results.append(fit_image(im, config, options, colour, progress))
        except FitCancelled:
            if stop_reason():  # the whole batch was stopped, not this member
                raise
            results.append(None)
    if results and all(r is None for r in results):
        raise FitCancelled("every image of the batch was cancelled")
    return results


__all__ = ["fit_batch"]
