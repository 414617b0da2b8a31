"""Fitting a network to an image: Adam on MSE, a learning-rate schedule, progress, cooperative
cancellation, determinism from a seed, and memory bounded by chunked gradient accumulation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .coords import pixel_grid
from .device import resolve_device
from .errors import ConfigError, FitCancelled
from .metrics import mse_to_psnr

SCHEDULES = ("cosine", "constant")


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


@dataclass(frozen=True)
class FitProgress:
    step: int
    steps: int
    loss: float
    psnr: float  # of the latest batch, in dB (an estimate of the training PSNR)


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
    if step < opts.warmup:
        return (step + 1) / opts.warmup
    t = (step - opts.warmup) / max(1, opts.steps - opts.warmup)
    lo = opts.final_lr_fraction
    return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def make_optimizer(named_params: Iterator[tuple[str, nn.Parameter]], opts: FitOptions) -> torch.optim.Adam:
    """Adam over the trainable parameters; the input phases (parameters named `phase`) get their own group
    at `phase_lr_mult` times the base lr. The schedule scales each group's own initial lr."""
    params = [(name, p) for name, p in named_params if p.requires_grad]
    if opts.phase_lr_mult == 1.0:  # one group in parameter order: exactly the optimizer before the option
        return torch.optim.Adam([p for _, p in params], lr=opts.lr, betas=opts.betas)
    is_phase = [name.rpartition(".")[2] == "phase" for name, _ in params]
    phase = [p for (_, p), ph in zip(params, is_phase, strict=True) if ph]
    rest = [p for (_, p), ph in zip(params, is_phase, strict=True) if not ph]
    groups = [{"params": rest}]
    if phase:
        groups.append({"params": phase, "lr": opts.lr * opts.phase_lr_mult})
    return torch.optim.Adam(groups, lr=opts.lr, betas=opts.betas)


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
    should_cancel: Callable[[], bool] | None = None,
    train_mask: np.ndarray | None = None,
) -> FitResult:
    """Fit `model` to `image` (float (H, W, C) in [0, 1], already in the network's colour space).

    `train_mask` (H, W) bool limits the loss to some pixels (the paper's held-out protocol).
    `should_cancel` is polled every step; when it returns True the fit raises FitCancelled.
    """
    if image.ndim != 3:
        raise ConfigError("image must be (H, W, C)")
    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    model.to(device).train()
    coords, values = image_targets(image, device)
    if train_mask is not None:
        keep = torch.as_tensor(train_mask.reshape(-1), device=device)
        coords, values = coords[keep], values[keep]
    n = coords.shape[0]
    _init_output_bias(model, values)

    opt = make_optimizer(model.named_parameters(), options)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, options))
    gen = torch.Generator(device=device).manual_seed(options.seed)
    batch = n if options.batch_pixels is None else min(options.batch_pixels, n)
    perm, cursor = None, n
    start = time.perf_counter()
    loss_value = float("nan")
    for step in range(options.steps):
        if should_cancel is not None and should_cancel():
            raise FitCancelled(f"fit cancelled at step {step}")
        if batch == n:
            idx = None
        else:  # shuffled epochs of mini-batches, as in the paper's protocol
            if cursor + batch > n:
                perm, cursor = torch.randperm(n, generator=gen, device=device), 0
            idx = perm[cursor : cursor + batch]
            cursor += batch
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for lo in range(0, batch, options.chunk_pixels):
            hi = min(batch, lo + options.chunk_pixels)
            sel = slice(lo, hi) if idx is None else idx[lo:hi]
            pred = model(coords[sel])
            # Sum of squared errors scaled to a mean over the whole batch, so chunking is exact.
            loss = ((pred - values[sel]) ** 2).sum() / (batch * values.shape[1])
            pen = model.penalty()
            if pen is not None and lo == 0:
                loss = loss + pen
            loss.backward()
            total += loss.detach()
        if options.clip_grad_norm is not None:  # after the last chunk: the norm of the whole step's gradient
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], options.clip_grad_norm)
        opt.step()
        sched.step()
        model.project()
        if progress is not None and ((step + 1) % options.progress_every == 0 or step + 1 == options.steps):
            loss_value = float(total)
            progress(FitProgress(step + 1, options.steps, loss_value, mse_to_psnr(loss_value)))
    if progress is None or not math.isfinite(loss_value):
        loss_value = float(total)
    model.eval()
    return FitResult(model, options.steps, loss_value, time.perf_counter() - start, str(device))


@torch.no_grad()
def _init_output_bias(model: nn.Module, values: torch.Tensor) -> None:
    """Start the output bias at the image's mean colour: the sines then only model the deviations."""
    out = getattr(model, "out", None)
    if isinstance(out, nn.Linear) and out.bias is not None:
        out.bias.copy_(values.mean(dim=0))
