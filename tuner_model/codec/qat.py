"""Quantization-aware fine-tuning: after the float fit, a few hundred Adam steps whose forward pass
sees the quantized tensors (straight-through gradients to the float ones), so the network learns to
live on the grid the blob stores. Reuses fit's pieces; it never changes fit.py."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

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


MemberProgress = Callable[[int, int, float], None]  # (member, step, loss)


def qat_finetune_batch(models: Sequence[nn.Module], targets: Sequence[np.ndarray],
                       quantizers: Sequence[dict[str, Quantizer]], steps: int, lr: float = 2e-4,
                       device: torch.device | str = "cpu", chunk_pixels: int = 1 << 18,
                       progress: MemberProgress | None = None,
                       member_cancelled: Callable[[int], bool] | None = None) -> list[float | None]:
    """`qat_finetune` of several networks of one configuration, each on its own image (all one shape)
    through its own quantizers, fine-tuned together; each gets what `qat_finetune` alone gives it up to
    float rounding (stacked as in `batched.fit_batch`: disjoint parameters, elementwise Adam, one
    schedule). Returns each network's best loss; None for one that `member_cancelled(k)` dropped, which
    is left as it was. Networks without a batched form are fine-tuned one after another."""
    from ..batched import batchable

    if len(models) == 1 or not batchable(models[0].config):
        return _one_by_one(models, targets, quantizers, steps, lr, device, chunk_pixels, progress, member_cancelled)
    return _batched(models, targets, quantizers, steps, lr, torch.device(device), chunk_pixels, progress,
                    member_cancelled)


def _one_by_one(models: Sequence[nn.Module], targets: Sequence[np.ndarray],
                quantizers: Sequence[dict[str, Quantizer]], steps: int, lr: float, device: torch.device | str,
                chunk_pixels: int, progress: MemberProgress | None,
                member_cancelled: Callable[[int], bool] | None) -> list[float | None]:
    out: list[float | None] = []
    for k, (model, target, qs) in enumerate(zip(models, targets, quantizers, strict=True)):
        def cancelled(k: int = k) -> bool:
            return member_cancelled is not None and member_cancelled(k)

        def member_progress(step: int, loss: float, k: int = k) -> None:
            if progress is not None:
                progress(k, step, loss)

        state = copy.deepcopy(model.state_dict())
        try:
            out.append(qat_finetune(model, target, qs, steps, lr, device, chunk_pixels, member_progress, cancelled))
        except FitCancelled:
            model.load_state_dict(state)  # a dropped network is left as it was, as in the batched form
            out.append(None)
    return out


def _batched(models: Sequence[nn.Module], targets: Sequence[np.ndarray], quantizers: Sequence[dict[str, Quantizer]],
             steps: int, lr: float, device: torch.device, chunk_pixels: int, progress: MemberProgress | None,
             member_cancelled: Callable[[int], bool] | None) -> list[float | None]:
    from ..batched import BatchedTuner, drop_members

    model = BatchedTuner(models).to(device).train()  # type: ignore[arg-type]
    coords, _ = image_targets(targets[0], device)
    values = torch.stack([image_targets(t, device)[1] for t in targets])  # (K, N, C)
    k_count, n, c = values.shape
    on_device = [{name: _to(q, device) for name, q in qs.items()} for qs in quantizers]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps), eta_min=lr * 0.05)
    chunk = max(1024, chunk_pixels // k_count)  # the same activation memory as one network's chunk
    best_loss = [float("inf")] * k_count
    best_state: list[dict[str, torch.Tensor]] = [{} for _ in range(k_count)]
    live = list(range(k_count))
    for step in range(steps + 1):
        if member_cancelled is not None:
            keep = [j for j, k in enumerate(live) if not member_cancelled(k)]
            if not keep:
                live = []
                break
            if len(keep) < len(live):
                values = drop_members(model, opt, values, keep)
                live = [live[j] for j in keep]
        opt.zero_grad(set_to_none=True)
        totals = _quantized_pass(model, [on_device[k] for k in live], coords, values, chunk, n * c)
        for j, k in enumerate(live):
            if totals[j] < best_loss[k]:  # the loss of the parameters before this step, as alone
                best_loss[k] = totals[j]
                best_state[k] = {name: p[j].detach().clone() for name, p in model.named_parameters()}
        if step == steps:
            break
        opt.step()
        sched.step()
        model.project()
        if progress is not None:
            for j, k in enumerate(live):
                progress(k, step + 1, totals[j])
    for k in live:
        _load_member(models[k], best_state[k], BatchedTuner.net_name)  # nothing when every loss was NaN
    return [best_loss[k] if k in live else None for k in range(k_count)]


def _quantized_pass(model: nn.Module, quantizers: list[dict[str, Quantizer]], coords: torch.Tensor,
                    values: torch.Tensor, chunk: int, denominator: int) -> list[float]:
    """One forward/backward over every pixel of the stacked networks seen through their quantizers;
    leaves the gradients on the parameters and returns each network's loss. Every quantizer's `fake`
    passes gradients straight through, so the quantized tensors are made once per step, not per chunk:
    the gradient they gather over the chunks is the parameters' gradient."""
    from ..batched import BatchedTuner

    params = dict(model.named_parameters())
    with torch.no_grad():
        fake = {name: torch.stack([_fake(qs, BatchedTuner.net_name(name), p[j]) for j, qs in enumerate(quantizers)])
                for name, p in params.items()}
    for t in fake.values():
        t.requires_grad_(True)
    totals = torch.zeros(values.shape[0], device=values.device)
    n = coords.shape[0]
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        pred = functional_call(model, fake, (coords[lo:hi],))  # (K, chunk, C)
        losses = ((pred - values[:, lo:hi]) ** 2).sum(dim=(1, 2)) / denominator
        losses.sum().backward()
        totals += losses.detach()
    for name, p in params.items():
        p.grad = fake[name].grad
    return totals.tolist()


def _fake(quantizers: dict[str, Quantizer], name: str, t: torch.Tensor) -> torch.Tensor:
    return quantizers[name].fake(t) if name in quantizers else t


def _to(q: Quantizer, device: torch.device) -> Quantizer:
    """The quantizer with its bound on `device` (same values): not copied again at every step."""
    return q if q.bound is None else dataclasses.replace(q, bound=q.bound.to(device))


@torch.no_grad()
def _load_member(net: nn.Module, state: dict[str, torch.Tensor], net_name: Callable[[str], str]) -> None:
    params = dict(net.named_parameters())
    for name, value in state.items():
        params[net_name(name)].copy_(value)
    net.eval()
