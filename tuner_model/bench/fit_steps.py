"""`tuner bench speed`'s fitting part: ms per full-image step of the network rate control uses at each
width, for a plain fp32 eager baseline (TunerNet + MSE + Adam + clamp, nothing else) and the faster
variants (the separable grid path, with its one-pass native top layer and with the eager one; bf16
autocast, torch.compile, both: CUDA only, recorded as skipped elsewhere), the PSNR each reaches after the
same steps, and peak GPU memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tuner_model.bench.machine import sync

VARIANTS = ("fp32-eager", "grid", "grid-eager-top", "bf16-autocast", "compiled", "bf16-compiled")


def _variant_unavailable(variant: str, dev: torch.device) -> str | None:
    if variant == "grid-eager-top" and dev.type != "cpu":
        return "the native top layer it is compared with runs on the CPU only: on this device it is `grid`"
    if variant in ("fp32-eager", "grid", "grid-eager-top"):
        return None
    if dev.type != "cuda":
        return ("CUDA only: on the CPU bf16 matmuls and inductor's compile time (tens of seconds per shape) "
                "do not pay for a fit; the service fits on GPUs")
    if "bf16" in variant and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    return None


def bench_fit(image: np.ndarray, widths: list[int], variants: list[str], steps: int, warmup: int,
              dev: torch.device, skipped: list[dict], say: Callable[[str], None]) -> list[dict[str, Any]]:
    """ms per full-image step (and PSNR after `steps`) per width and variant; fp32-eager is the baseline."""
    from tuner_model.rate.plan import default_config, resolve
    from tuner_model.rate.request import EncodeRequest

    h, w, c = image.shape
    encoder_steps = round(resolve(EncodeRequest(), w, h, c).full_steps())  # of a default-effort encode
    rows = []
    run = ["fp32-eager"] + [v for v in variants if v != "fp32-eager"]
    for width in widths:
        config = default_config(w, h, c, width)
        base_ms = None
        for variant in run:
            why = _variant_unavailable(variant, dev)
            if why is not None:
                if width == widths[0]:
                    skipped.append({"what": f"fit variant {variant}", "why": why})
                continue
            try:
                ms, psnr_db, peak = time_fit_steps(config, image, variant, steps, warmup, dev)
            except Exception as e:  # noqa: BLE001 - a variant that cannot run here is a finding, not a crash
                skipped.append({"what": f"fit variant {variant} at width {width}", "why": f"failed: {e}"[:300]})
                continue
            if variant == "fp32-eager":
                base_ms = ms
            row = {"width": width, "variant": variant, "ms_per_step": round(ms, 3), "psnr": round(psnr_db, 3),
                   "steps": steps, "pixels": w * h,
                   "speedup_vs_fp32_eager": round(base_ms / ms, 3) if base_ms else None,
                   "seconds_to_encoder_stop_estimate": round(ms * encoder_steps / 1000, 2),
                   "encoder_full_step_equivalents": encoder_steps}
            if peak is not None:
                row["peak_gpu_mib"] = round(peak / 2**20, 1)
            rows.append(row)
            say(f"fit width {width} {variant}: {ms:.2f} ms/step, {psnr_db:.2f} dB after {steps} steps")
    return rows


def time_fit_steps(config, image: np.ndarray, variant: str, steps: int, warmup: int,
                   dev: torch.device) -> tuple[float, float, int | None]:
    """(ms per step, PSNR after warmup + steps, peak GPU bytes) of full-batch Adam steps with the clamp.
    `grid` is the same step on the grid path (train/grid.py), `grid-eager-top` that path with the native
    top layer off (train/native.py), the others the network's dense forward."""
    from tuner_model.train import grid as grid_mod

    native_before = grid_mod.NATIVE_TOP
    grid_mod.NATIVE_TOP = variant != "grid-eager-top"
    try:
        return _time_fit_steps(config, image, variant, steps, warmup, dev)
    finally:
        grid_mod.NATIVE_TOP = native_before


def _time_fit_steps(config, image: np.ndarray, variant: str, steps: int, warmup: int,
                    dev: torch.device) -> tuple[float, float, int | None]:
    from tuner_model.core.metrics import mse_to_psnr
    from tuner_model.models import build_model
    from tuner_model.train.fit import FitOptions, image_targets, make_objective

    model = build_model(config, seed=0).to(dev).train()
    coords, values = image_targets(image, dev)
    with torch.no_grad():
        model.out.bias.copy_(values.mean(dim=0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if "bf16" in variant:
        forward = _mixed_forward(model, dev)
    if "compiled" in variant:
        forward = torch.compile(forward)
    on_grid = variant.startswith("grid")
    grid = make_objective(model, [image], FitOptions(path="grid"), dev, stacked=False) if on_grid else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if grid is not None:
            grid.losses(model, dict(model.named_parameters()), 0)
        else:
            pred = forward(coords)
            loss = ((pred.float() - values) ** 2).mean()
            loss.backward()
        opt.step()
        model.project()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(warmup):
        step()
    sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    ms = (time.perf_counter() - start) * 1000 / steps
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    with torch.no_grad():  # quality of what those steps learned, always measured in fp32
        mse = float(((model.eval()(coords) - values) ** 2).mean())
    return ms, mse_to_psnr(mse), peak


def _mixed_forward(model, dev: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """TUNER with bf16 matrix products where accuracy allows: the input layer stays fp32 (its arguments
    reach hundreds of radians, where bf16 keeps no fractional digits), the hidden and output products run
    in bf16 under autocast, and every sine is taken in fp32."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = model.features(x)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            for i in range(len(model.hidden)):
                wh = model.config.hidden_omega
                z = torch.nn.functional.linear(y, model.effective_weight(i), wh * model.hidden_bias[i])
                y = torch.sin(z.float())
            return model.out(y).float()

    return forward


