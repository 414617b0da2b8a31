"""Fitting a network to an image: Adam on MSE, a learning-rate schedule, progress, cooperative
cancellation, determinism from a seed; TUNER networks train on the pixel grid (grid.py), the others on
chunked coordinates (memory bounded either way). The loop itself is loop.py."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tuner_model.core import colour as colour_mod
from tuner_model.core.coords import pixel_grid
from tuner_model.core.device import resolve_device
from tuner_model.core.errors import ConfigError
from tuner_model.core.metrics import mse_to_psnr
from tuner_model.core.progress import Progress
from tuner_model.models import ModelConfig, build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.render.fitted import measure_psnr
from tuner_model.train.loop import LoopOptions, train
from tuner_model.train.objective import DenseObjective, GridObjective, Objective, SubGrid, grid_applies

SCHEDULES = ("cosine", "constant")
PATHS = ("auto", "grid", "dense")


@dataclass(frozen=True)
class FitOptions:
    steps: int = 2000
    lr: float = 2e-3  # measured: +0.16 dB over 1e-3, about the same as 4e-3 (docs/CODEC.md)
    schedule: str = "cosine"  # cosine decay to lr·final_lr_fraction after a linear warm-up
    warmup: int = 50
    final_lr_fraction: float = 0.02
    batch_pixels: int | None = None  # None: every training pixel at every step (full batch)
    chunk_pixels: int = 1 << 18  # the most pixels in one forward/backward pass: bounds memory
    seed: int = 0
    device: str = "auto"
    progress_every: int = 10
    # Optimizer knobs; the defaults are torch's plain Adam. (0.9, 0.99) / 0.02 / 10.0 together gave +0.19 dB
    # float PSNR but only +0.099 dB after quantization + QAT, under the bar to adopt (docs/CODEC.md).
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's
    clip_grad_norm: float | None = None  # scale the step's total gradient norm down to this; None: no clip
    phase_lr_mult: float = 1.0  # the input phases' lr over the base lr (at 1x they hardly leave their init)
    # How a step is computed: "auto" takes the grid path (grid.py) for TUNER networks trained on a grid
    # (no random pixel mini-batches), "dense" forces every pixel through the network's own forward.
    path: str = "auto"
    batch_rows: int | None = None  # grid path: each step on this many random rows (None: every row)
    batch_cols: int | None = None  # grid path: and on this many random columns (None: every column)

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 10_000_000:
            raise ConfigError(f"steps must be in 1..10000000, got {self.steps}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"learning rate must be in (0, 1), got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}")
        if self.batch_pixels is not None and self.batch_pixels < 1:
            raise ConfigError("batch_pixels must be positive")
        if self.chunk_pixels < 1024:
            raise ConfigError("chunk_pixels must be at least 1024")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"Adam betas must be two numbers in [0, 1), got {self.betas}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ConfigError(f"clip_grad_norm must be positive or None, got {self.clip_grad_norm}")
        if not 0 < self.phase_lr_mult <= 1000:
            raise ConfigError(f"phase_lr_mult must be in (0, 1000], got {self.phase_lr_mult}")
        if self.path not in PATHS:
            raise ConfigError(f"path must be one of {', '.join(PATHS)}")
        if self.batch_rows is not None and self.batch_rows < 1:
            raise ConfigError("batch_rows must be positive")


FitProgress = Progress  # a fit's progress is an encode's, in phase "fit"


@dataclass
class FitResult:
    model: nn.Module
    steps: int
    loss: float
    seconds: float
    device: str


def lr_factor(step: int, opts: FitOptions) -> float:
    """Multiplier of the base learning rate at `step` (0-based)."""
    if opts.schedule == "constant":
        return 1.0
    return cosine_factor(step, opts.steps, opts.warmup, opts.final_lr_fraction)


def cosine_factor(step: int, steps: int, warmup: int, final: float) -> float:
    """Linear warm-up over `warmup` steps, then a cosine from 1 down to `final` at `steps`."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def loop_options(options: FitOptions) -> LoopOptions:
    return LoopOptions(steps=options.steps, lr=options.lr, lr_factor=lambda s: lr_factor(s, options),
                       betas=options.betas, clip_grad_norm=options.clip_grad_norm,
                       phase_lr_mult=options.phase_lr_mult, progress_every=options.progress_every)


def uses_grid(model: nn.Module, options: FitOptions) -> bool:
    """Whether a fit with `options` trains `model` on the grid path."""
    return options.path != "dense" and options.batch_pixels is None and grid_applies(model)


def make_objective(model: nn.Module, images: list[np.ndarray], options: FitOptions, device: torch.device,
                   stacked: bool, mask: np.ndarray | None = None, penalty: bool = True) -> Objective:
    """The grid objective when it applies, else the dense one (SIREN, FFM, random pixel mini-batches)."""
    if options.path == "grid" and not grid_applies(model):
        raise ConfigError("the grid path needs a TUNER network")
    if uses_grid(model, options):
        sub_grid = SubGrid(options.batch_rows, options.batch_cols, options.seed)
        return GridObjective(images, device, stacked, model, mask=mask, sub_grid=sub_grid, penalty=penalty)
    return DenseObjective(images, device, stacked, mask=mask, batch_pixels=options.batch_pixels,
                          chunk_pixels=options.chunk_pixels, seed=options.seed, penalty=penalty)


def image_targets(image: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates (H·W, 2) at the pixel centres and target values (H·W, C) of an (H, W, C) image."""
    h, w, c = image.shape
    coords = pixel_grid(w, h, (w, h), device=device)
    values = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32, device=device).reshape(-1, c)
    return coords, values


def fit(
    model: nn.Module,
    image: np.ndarray,
    options: FitOptions = FitOptions(),
    progress: Callable[[FitProgress], None] | None = None,
    train_mask: np.ndarray | None = None,
) -> FitResult:
    """Fit `model` to `image` (float (H, W, C) in [0, 1], already in the network's colour space).

    `train_mask` (H, W) bool limits the loss to some pixels (the paper's held-out protocol).
    The caller's stop check (core/stop.py) is polled every step (and inside a grid step); when it gives a
    reason the fit raises FitCancelled.
    """
    if image.ndim != 3:
        raise ConfigError("image must be (H, W, C)")
    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    model.to(device).train()
    _init_output_bias(model, image, train_mask)
    objective = make_objective(model, [image], options, device, stacked=False, mask=train_mask)

    def report(step: int, _live: list[int], losses: list[float]) -> None:
        if progress is not None:
            progress(Progress("fit", step, options.steps, losses[0], mse_to_psnr(losses[0])))

    result = train(model, objective, loop_options(options), progress=report)
    loss = result.losses[0]
    return FitResult(model, options.steps, float("nan") if loss is None else loss, result.seconds, str(device))


@torch.no_grad()
def _init_output_bias(model: nn.Module, image: np.ndarray, mask: np.ndarray | None) -> None:
    """Start the output bias at the image's mean colour: the sines then only model the deviations."""
    out = getattr(model, "out", None)
    if isinstance(out, nn.Linear) and out.bias is not None:
        pixels = image.reshape(-1, image.shape[2]) if mask is None else image[mask]
        out.bias.copy_(torch.as_tensor(pixels.mean(axis=0, dtype=np.float64), dtype=torch.float32))


def fit_image(image: np.ndarray, config: ModelConfig, options: FitOptions = FitOptions(), colour: str = "rgb",
              progress: Callable[[FitProgress], None] | None = None) -> FittedImage:
    """Fit a fresh network of `config` to an (H, W, C) RGB/gray image in [0, 1]: a FittedImage."""

    h, w, c = image.shape
    colour_mod.check(colour, c)
    target = colour_mod.forward(image, colour)
    model = build_model(config, seed=options.seed)
    result = fit(model, target, options, progress=progress)
    model = result.model.cpu()
    fitted = FittedImage(config, w, h, model, colour)
    fitted.meta.update(steps=result.steps, seconds=round(result.seconds, 3), device=result.device)
    fitted.meta["psnr"] = round(measure_psnr(fitted, image), 4)
    return fitted
