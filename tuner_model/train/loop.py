"""The one training loop: Adam on K >= 1 networks (one module, or K stacked in one), a learning-rate
schedule, gradient clipping, the TUNER clamp after every step, progress, cooperative cancellation of
the whole run or of one member, optional quantizers (quantization-aware training: the forward pass sees
the quantized tensors, gradients pass straight through) and optional keep-best (the parameters whose
loss was lowest are restored at the end).

`fit`, `fit_batch`, `qat_finetune` and `qat_finetune_batch` are this loop with different options; what
a step computes is the objective's business (objective.py), so a faster step is written once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tuner_model.core.errors import FitCancelled, Stopped
from tuner_model.core.stop import stop_reason
from tuner_model.models.stacked import BatchedTuner
from tuner_model.train.objective import Objective

Quantizers = dict  # name -> codec.quant.Quantizer (anything with .fake(tensor))
FIRST_REPORTED_STEPS = 5


@dataclass(frozen=True)
class LoopOptions:
    steps: int
    lr: float
    lr_factor: Callable[[int], float]  # multiplier of each group's lr at a step (0-based)
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad_norm: float | None = None  # each network's own gradient norm is scaled down to this
    phase_lr_mult: float = 1.0  # the input phases' lr over the base lr
    keep_best: bool = False  # evaluate once more after the last step and restore the best parameters
    progress_every: int = 10


@dataclass
class LoopResult:
    losses: list[float | None]  # per member: the last (or best) loss; None for a dropped member
    seconds: float


# (step, members still training, their losses)
LoopProgress = Callable[[int, list[int], list[float]], None]


def make_optimizer(named_params: Iterable[tuple[str, nn.Parameter]], lr: float, betas: tuple[float, float],
                   phase_lr_mult: float = 1.0) -> torch.optim.Adam:
    """Adam over the trainable parameters; the input phases (parameters named `phase`) get their own group
    at `phase_lr_mult` times the base lr. The schedule scales each group's own initial lr."""
    params = [(name, p) for name, p in named_params if p.requires_grad]
    if phase_lr_mult == 1.0:  # one group in parameter order
        return torch.optim.Adam([p for _, p in params], lr=lr, betas=betas)
    is_phase = [name.rpartition(".")[2] == "phase" for name, _ in params]
    phase = [p for (_, p), ph in zip(params, is_phase, strict=True) if ph]
    rest = [p for (_, p), ph in zip(params, is_phase, strict=True) if not ph]
    groups = [{"params": rest}]
    if phase:
        groups.append({"params": phase, "lr": lr * phase_lr_mult})
    return torch.optim.Adam(groups, lr=lr, betas=betas)


def train(model: nn.Module, objective: Objective, options: LoopOptions, stacked: bool = False,
          quantizers: Sequence[Quantizers] | None = None, progress: LoopProgress | None = None,
          member_cancelled: Callable[[int], bool] | None = None) -> LoopResult:
    """Train `model` (K stacked networks when `stacked`, else one) in place on `objective`.

    The caller's stop check (core/stop.py; polled every step, and inside a grid step) raises FitCancelled.
    `member_cancelled(k)`
    drops member k alone: the others go on exactly as before; when every member is dropped the loop
    raises FitCancelled, or, with keep_best, returns with every loss None."""
    k_count = _members(model, stacked)
    opt = make_optimizer(model.named_parameters(), options.lr, options.betas, options.phase_lr_mult)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, options.lr_factor)
    live = list(range(k_count))
    last: list[float] = [math.nan] * k_count
    best: list[float] = [math.inf] * k_count
    best_state: list[dict[str, torch.Tensor] | None] = [None] * k_count
    start = time.perf_counter()
    evaluations = options.steps + (1 if options.keep_best else 0)
    for step in range(evaluations):
        reason = stop_reason()
        if reason:
            raise FitCancelled(f"fit stopped at step {step}: {reason}")
        if member_cancelled is not None:
            keep = [j for j, k in enumerate(live) if not member_cancelled(k)]
            if not keep:
                if options.keep_best:
                    live = []
                    break
                raise FitCancelled(f"every network was cancelled at step {step}")
            if len(keep) < len(live):
                drop_members(model, opt, keep)
                objective.drop(keep)
                live = [live[j] for j in keep]
        opt.zero_grad(set_to_none=True)
        qs = None if quantizers is None else [quantizers[k] for k in live]
        try:
            losses = _step_losses(model, objective, step, stacked, qs)
        except FitCancelled:
            raise
        except Stopped as e:  # inside the step (between its row tiles)
            raise FitCancelled(f"fit stopped inside step {step}: {e}") from None
        for j, k in enumerate(live):
            last[k] = losses[j]
            if options.keep_best and losses[j] < best[k]:  # the loss of the parameters before this step
                best[k] = losses[j]
                best_state[k] = _snapshot(model, j, stacked)
        if step == options.steps:  # keep_best's final evaluation
            break
        if options.clip_grad_norm is not None:
            _clip(model, options.clip_grad_norm, stacked)
        opt.step()
        sched.step()
        model.project()
        # Every one of the first steps too: a client sees progress (and a rate for an ETA) at once.
        first = step < FIRST_REPORTED_STEPS
        if progress is not None and (first or (step + 1) % options.progress_every == 0 or step + 1 == options.steps):
            progress(step + 1, list(live), [losses[j] for j in range(len(live))])
    if options.keep_best:
        for j, k in enumerate(live):
            if best_state[k] is not None:
                _restore(model, j, stacked, best_state[k])
    model.eval()
    out: list[float | None] = [None] * k_count
    for k in live:
        out[k] = best[k] if options.keep_best else last[k]
    return LoopResult(out, time.perf_counter() - start)


def _members(model: nn.Module, stacked: bool) -> int:
    return int(next(model.parameters()).shape[0]) if stacked else 1


def _step_losses(model: nn.Module, objective: Objective, step: int, stacked: bool,
                 quantizers: list[Quantizers] | None) -> list[float]:
    """One step's losses, the gradients left on the parameters. Every quantizer's `fake` passes gradients
    straight through, so the quantized tensors are made once per step and their gradient is the
    parameters' gradient."""
    params = dict(model.named_parameters())
    if quantizers is None:
        return objective.losses(model, params, step).tolist()
    with torch.no_grad():
        if stacked:
            fake = {name: torch.stack([_fake(qs, BatchedTuner.net_name(name), p[j]) for j, qs in enumerate(quantizers)])
                    for name, p in params.items()}
        else:
            fake = {name: _fake(quantizers[0], name, p) for name, p in params.items()}
    for t in fake.values():
        t.requires_grad_(True)
    losses = objective.losses(model, fake, step).tolist()
    for name, p in params.items():
        p.grad = fake[name].grad
    return losses


def _fake(quantizers: Quantizers, name: str, t: torch.Tensor) -> torch.Tensor:
    q = quantizers.get(name)
    if q is None:
        return t.detach().clone()
    if q.bound is not None and q.bound.device != t.device:
        import dataclasses

        q = dataclasses.replace(q, bound=q.bound.to(t.device))
        quantizers[name] = q
    return q.fake(t).detach()


def _snapshot(model: nn.Module, j: int, stacked: bool) -> dict[str, torch.Tensor]:
    return {name: (p[j] if stacked else p).detach().clone() for name, p in model.named_parameters()}


@torch.no_grad()
def _restore(model: nn.Module, j: int, stacked: bool, state: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        (p[j] if stacked else p).copy_(state[name])


@torch.no_grad()
def _clip(model: nn.Module, max_norm: float, stacked: bool) -> None:
    params = [p for p in model.parameters() if p.grad is not None]
    if stacked:
        clip_per_network(params, max_norm)
    else:
        nn.utils.clip_grad_norm_(params, max_norm)


@torch.no_grad()
def clip_per_network(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` applied to each stacked network alone: network k's gradients (index k
    of the leading dimension of every parameter) are scaled by max_norm / (‖g_k‖ + 1e-6) when that is below 1.
    A norm over the whole stack would clip every network by the others' gradients. Returns the K norms."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # (K,), as torch: norm of norms
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
    return norms


@torch.no_grad()
def drop_members(model: BatchedTuner, opt: torch.optim.Optimizer, keep: list[int]) -> None:
    """Keeps only the stacked networks at positions `keep`, with their Adam moments: the survivors go on
    exactly as if the dropped ones had never been there (their parameters and gradients are disjoint).
    New Parameter objects replace the old ones (autograd remembers a parameter's shape), in the model and in
    the optimizer's groups, which the learning-rate schedule keeps using."""
    idx = torch.tensor(keep, device=next(model.parameters()).device)
    swaps: dict[torch.nn.Parameter, torch.nn.Parameter] = {}
    for name, p in list(model.named_parameters()):
        new = torch.nn.Parameter(p.detach().index_select(0, idx), requires_grad=p.requires_grad)
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, new)
        swaps[p] = new
        state = opt.state.pop(p, None)
        if state:
            opt.state[new] = {k: v.index_select(0, idx) if torch.is_tensor(v) and v.dim() > 0 else v
                              for k, v in state.items()}
    for group in opt.param_groups:
        group["params"] = [swaps.get(p, p) for p in group["params"]]
