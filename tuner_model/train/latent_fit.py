"""Fitting a latent-grid TUNER: one loop over a list of phases (a preset is data).

Each step reads the grids through a quantization proxy, synthesizes the whole image and minimizes
distortion + λ · rate, where the rate is the latents' code length under the context model
(models/latent_context.py): bits = -log2(F(ŷ + ½ - μ) - F(ŷ - ½ - μ)) with μ and F's scale from the
latent's decoded neighbours.

Three proxies: C3 / Cool-chic's soft rounding at a temperature T plus uniform noise of amplitude a (both
annealed over the phase); MIXED, where the synthesis reads the rounded latents (straight-through gradient)
and only the rate sees them with noise; and hard rounding with the straight-through gradient. With the few
hundred to few thousand steps a CPU affords, soft rounding left a 2.5–3.5 dB gap at the final rounding and
MIXED none (docs/CODEC.md, "Latent grids"): the preset (rate/latent_encode.py) is MIXED then STE.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tuner_model.models.latent import LatentConfig, LatentTunerNet
from tuner_model.models.latent_context import ContextModel

NOISE, STRAIGHT_THROUGH, MIXED = "noise", "ste", "mixed"


@dataclass(frozen=True)
class Phase:
    name: str
    steps: int
    lr: float
    proxy: str = NOISE  # NOISE (soft round + noise, annealed), MIXED or STRAIGHT_THROUGH (hard round)
    temperature: tuple[float, float] = (0.3, 0.1)
    noise: tuple[float, float] = (1.0, 0.5)
    lr_floor: float = 0.0  # the cosine schedule ends at lr · lr_floor
    latent_lr_gain: float = 1.0  # the latents' learning rate is lr times this
    coarse_to_fine: float = 0.0  # grid l joins at this fraction of the phase × (levels-1-l)/(levels-1)


@dataclass
class LatentFitResult:
    model: LatentTunerNet  # latents rounded to integers
    context: ContextModel  # the latents' entropy model
    mse: float  # of the rounded latents with the float network
    rate_bits: float  # the training model's estimate for the rounded latents
    seconds: float
    cpu_seconds: float


def soft_round(y: torch.Tensor, temperature: float) -> torch.Tensor:
    """Agustsson & Theis' soft rounding: the identity as T → ∞, rounding as T → 0."""
    base = torch.floor(y)
    r = y - base - 0.5
    return base + 0.5 + 0.5 * torch.tanh(r / temperature) / math.tanh(0.5 / temperature)


def _active_levels(phase: Phase, progress: float, levels: int) -> list[bool]:
    """Which grids the step reads: the coarse ones first, so that the fine grids learn what the coarse
    ones cannot say instead of the whole image (the finest grid fits fastest, pixel by pixel)."""
    if phase.coarse_to_fine <= 0 or levels == 1:
        return [True] * levels
    return [progress >= phase.coarse_to_fine * (levels - 1 - lv) / (levels - 1) for lv in range(levels)]


def _proxy(y: torch.Tensor, phase: Phase, progress: float, generator: torch.Generator) -> torch.Tensor:
    if phase.proxy == STRAIGHT_THROUGH:
        return y + (torch.round(y) - y).detach()
    if phase.proxy == MIXED:
        return y + (torch.rand(y.shape, generator=generator) - 0.5)
    t0, t1 = phase.temperature
    a0, a1 = phase.noise
    temperature = t0 + (t1 - t0) * progress
    amplitude = a0 + (a1 - a0) * progress
    noise = (torch.rand(y.shape, generator=generator) - 0.5) * amplitude
    return soft_round(y, temperature) + noise


def fit_latent(image: torch.Tensor, config: LatentConfig, lam: float, phases: list[Phase], seed: int = 0,
               on_step: Callable[[str, int, int, float], None] | None = None) -> LatentFitResult:
    """Fit `image` (H, W, C) in [0, 1] with rate weight `lam` (MSE per bit per pixel)."""
    height, width, _ = image.shape
    generator = torch.Generator().manual_seed(seed)
    model = LatentTunerNet(config, width, height, generator)
    context_model = ContextModel(config.levels)
    basis = model.native_basis()
    target = image.reshape(-1, image.shape[-1])
    pixels = height * width
    started, cpu_started = time.perf_counter(), time.process_time()
    for phase in phases:
        network = [p for n, p in model.named_parameters() if not n.startswith("latents.")]
        groups = [(list(model.latents), phase.latent_lr_gain), (network + list(context_model.parameters()), 1.0)]
        optimizer = torch.optim.Adam([{"params": ps, "gain": gain} for ps, gain in groups], lr=phase.lr)
        for step in range(phase.steps):
            progress = step / max(1, phase.steps - 1)
            lr = phase.lr * (phase.lr_floor + (1 - phase.lr_floor) * 0.5 * (1 + math.cos(math.pi * progress)))
            for group in optimizer.param_groups:
                group["lr"] = lr * group["gain"]
            active = _active_levels(phase, progress, config.levels)
            latents = [g if on else g.detach() * 0 for g, on in zip(model.latents, active, strict=True)]
            coded = [_proxy(g, phase, progress, generator) for g in latents]
            # The decoder's integers: what the context sees, and (MIXED) what the synthesis reads, with
            # the straight-through gradient; the rate sees the noisy latents, a smooth bound on it.
            rounded = [g + (torch.round(g) - g).detach() for g in latents]
            grids = rounded if phase.proxy == MIXED else coded
            pred = model.forward_native(grids, basis)
            mse = torch.mean((pred - target) ** 2)
            bits = context_model.bits(coded, rounded)
            loss = mse + lam * bits / pixels
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.project()
            if on_step is not None:
                on_step(phase.name, step, phase.steps, mse.item())
    with torch.no_grad():
        for g in model.latents:
            g.copy_(torch.round(g))
        pred = model.forward_native(list(model.latents), basis)
        mse = float(torch.mean((pred.clamp(0, 1) - target) ** 2))
        bits = float(context_model.bits(list(model.latents), list(model.latents)))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return LatentFitResult(model, context_model, mse, bits, seconds, cpu_seconds)
