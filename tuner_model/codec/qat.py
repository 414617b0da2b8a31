"""Quantization-aware fine-tuning: after the float fit, a few hundred Adam steps whose forward pass
sees the quantized tensors (straight-through gradients to the float ones), so the network learns to
live on the grid the blob stores. Reuses fit's pieces; it never changes fit.py."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..errors import FitCancelled
from ..fit import image_targets
from .quant import Quantizer


def qat_finetune(model: nn.Module, target: np.ndarray, quantizers: dict[str, Quantizer], steps: int,
                 lr: float = 2e-4, device: torch.device | str = "cpu", chunk_pixels: int = 1 << 18,
                 progress: Callable[[int, float], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None) -> float:
    """Fine-tune `model` in place through its quantizers; keeps the parameters whose quantized network
    had the lowest loss. `target` is the image in the network's colour space. Returns that loss."""
    model.to(device).train()
    coords, values = image_targets(target, torch.device(device))
    n, c = values.shape
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps), eta_min=lr * 0.05)
    best_loss, best_state = float("inf"), None
    for step in range(steps + 1):
        if should_cancel is not None and should_cancel():
            raise FitCancelled(f"fine-tuning cancelled at step {step}")
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for lo in range(0, n, chunk_pixels):
            hi = min(n, lo + chunk_pixels)
            fake = {k: quantizers[k].fake(p) if k in quantizers else p for k, p in params.items()}
            pred = functional_call(model, fake, (coords[lo:hi],))
            loss = ((pred - values[lo:hi]) ** 2).sum() / (n * c)
            loss.backward()
            total += float(loss.detach())
        if total < best_loss:  # the loss of the parameters as they are now, before this step
            best_loss, best_state = total, copy.deepcopy(model.state_dict())
        if step == steps:
            break
        opt.step()
        sched.step()
        model.project()
        if progress is not None:
            progress(step + 1, total)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return best_loss
