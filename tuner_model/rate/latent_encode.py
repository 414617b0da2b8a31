"""Encoding an image with the latent-grid model at a rate weight λ: fit (phases), choose each network
tensor's quantization step by rate–distortion cost, write the blob, and measure what decoding gives."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tuner_model.codec import entropy
from tuner_model.codec.latent_blob import encode_latent_blob, network_shapes, snap_network
from tuner_model.models.latent import LatentConfig, LatentTunerNet
from tuner_model.train.latent_fit import MIXED, STRAIGHT_THROUGH, Phase, fit_latent

STEP_EXPONENTS = range(3, 17)
DEFAULT_STEPS = 1500


def preset(total_steps: int) -> list[Phase]:
    """The main phase (the synthesis reads rounded latents, the rate sees noisy ones) then hard rounding
    with straight-through gradients for a fifth of the steps. The latents move 50× faster than the
    network: with the synthesis reading them at step 0.1 (LatentConfig.latent_step) that is 5× in its
    units. Measured against the alternatives in docs/CODEC.md ("Latent grids")."""
    final = max(1, total_steps // 5)
    return [Phase("fit", total_steps - final, 1e-2, proxy=MIXED, latent_lr_gain=50.0),
            Phase("ste", final, 1e-3, proxy=STRAIGHT_THROUGH, latent_lr_gain=50.0)]


@dataclass
class LatentEncodeResult:
    blob: bytes
    psnr: float  # of the decoded blob at the native size, clamped to [0, 1] (8-bit-peak PSNR)
    bpp: float
    seconds: float
    cpu_seconds: float
    step_exponents: dict[str, int]


def choose_steps(model: LatentTunerNet, target: torch.Tensor, lam: float) -> dict[str, int]:
    """Per network tensor, the step 2^-e minimizing MSE + λ·bits/pixel, tensor by tensor in blob order
    (the tensors already chosen stay snapped while the next is searched)."""
    pixels = target.shape[0]
    basis = model.native_basis()
    grids = list(model.latents)
    params = dict(model.named_parameters())
    chosen: dict[str, int] = {}
    with torch.no_grad():
        for name in network_shapes(model.config):
            p = params[name]
            original = p.detach().clone()
            best: tuple[float, int] | None = None
            for e in STEP_EXPONENTS:
                sym = torch.round(original * 2.0**e)
                p.copy_(sym * 2.0**-e)
                mse = float(torch.mean((model.forward_native(grids, basis).clamp(0, 1) - target) ** 2))
                s = sym.to(torch.int64).numpy().reshape(-1)
                r = int(np.abs(s).max())
                bits = entropy.code_bits(entropy.histogram(s, -r, r), entropy.best_model(s, -r, r)) if r else 0.0
                cost = mse + lam * (bits + 24) / pixels
                if best is None or cost < best[0]:
                    best = (cost, e)
            chosen[name] = best[1]
            p.copy_(torch.round(original * 2.0 ** best[1]) * 2.0 ** -best[1])
    return chosen


def encode_latent(image: np.ndarray, lam: float, config: LatentConfig | None = None,
                  phases: list[Phase] | None = None, seed: int = 0,
                  on_step: Callable[[str, int, int, float], None] | None = None) -> LatentEncodeResult:
    """image: (H, W, 3) uint8 RGB."""
    config = config or LatentConfig()
    phases = phases or preset(DEFAULT_STEPS)
    started, cpu_started = time.perf_counter(), time.process_time()
    target = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / 255.0)
    fit = fit_latent(target, config, lam, phases, seed=seed, on_step=on_step)
    flat = target.reshape(-1, target.shape[-1])
    steps = choose_steps(fit.model, flat, lam)
    snap_network(fit.model, steps)
    # The snapped model holds exactly the values a decoder rebuilds (integer latents, network values on
    # power-of-two grids; tests/library/test_latent.py checks the round trip), so its render is the
    # decoded blob's and the blob is coded once, with that PSNR in its header.
    with torch.no_grad():
        out = fit.model.forward_native(list(fit.model.latents), fit.model.native_basis()).clamp(0, 1)
    mse = float(torch.mean((torch.round(out * 255) / 255 - flat) ** 2))
    psnr = 10 * math.log10(1 / max(mse, 1e-12))
    blob = encode_latent_blob(fit.model, fit.context.state_integers(), steps, psnr)
    h, w = image.shape[:2]
    return LatentEncodeResult(blob, psnr, 8 * len(blob) / (h * w), time.perf_counter() - started,
                              time.process_time() - cpu_started, steps)
