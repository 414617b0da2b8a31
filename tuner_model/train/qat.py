"""Quantization-aware fine-tuning: after the float fit, a few hundred Adam steps whose forward pass
sees the quantized tensors (straight-through gradients to the float ones), so the network learns to
live on the grid the blob stores. The one training loop (loop.py) with quantizers and keep-best."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tuner_model.codec.quant import Quantizer
from tuner_model.core.errors import FitCancelled
from tuner_model.core.stop import stop_reason, stop_when
from tuner_model.models.stacked import BatchedTuner, batchable
from tuner_model.train.fit import FitOptions, cosine_factor, make_objective
from tuner_model.train.loop import LoopOptions, train

QAT_FINAL_LR = 0.05  # the cosine ends at this fraction of the fine-tuning lr


@dataclass(frozen=True)
class QatOptions:
    steps: int
    lr: float = 2e-4
    device: torch.device | str = "cpu"
    chunk_pixels: int = 1 << 18  # pixels per forward pass
    batch_rows: int | None = None  # rows per step (None: all; keep-best only then)
    final_lr: float = QAT_FINAL_LR  # the cosine ends at this fraction of lr


def _qat_options(options: QatOptions | int) -> QatOptions:
    return QatOptions(options) if isinstance(options, int) else options


def _options(o: QatOptions) -> LoopOptions:
    # Keep-best compares the losses of successive steps: only meaningful when they are over the same pixels
    # (every row); on random rows it would pick the luckiest subset, so the last parameters are kept.
    return LoopOptions(steps=o.steps, lr=o.lr, lr_factor=lambda s: cosine_factor(s, max(1, o.steps), 0, o.final_lr),
                       keep_best=o.batch_rows is None, progress_every=1)


def _objective(model: nn.Module, targets: Sequence[np.ndarray], device: torch.device, stacked: bool,
               chunk_pixels: int, batch_rows: int | None):
    return make_objective(model, list(targets), FitOptions(chunk_pixels=chunk_pixels, batch_rows=batch_rows),
                          device, stacked=stacked, penalty=False)


def qat_finetune(model: nn.Module, target: np.ndarray, quantizers: dict[str, Quantizer], options: QatOptions | int,
                 progress: Callable[[int, float], None] | None = None) -> float:
    """Fine-tune `model` in place through its quantizers (`options`: a QatOptions, or that many steps);
    keeps the parameters whose quantized network had the lowest loss when every step sees every row.
    `target` is the image in the network's colour space. Returns the kept parameters' loss."""
    o = _qat_options(options)
    dev = torch.device(o.device)
    model.to(dev).train()
    objective = _objective(model, [target], dev, False, o.chunk_pixels, o.batch_rows)

    def report(step: int, _live: list[int], losses: list[float]) -> None:
        if progress is not None:
            progress(step, losses[0])

    result = train(model, objective, _options(o), quantizers=[dict(quantizers)],
                   progress=report)
    loss = result.losses[0]
    return float("inf") if loss is None else loss


MemberProgress = Callable[[int, int, float], None]  # (member, step, loss)


def qat_finetune_batch(models: Sequence[nn.Module], targets: Sequence[np.ndarray],
                       quantizers: Sequence[dict[str, Quantizer]], options: QatOptions | int,
                       progress: MemberProgress | None = None,
                       member_cancelled: Callable[[int], bool] | None = None) -> list[float | None]:
    """`qat_finetune` of several networks of one configuration, each on its own image (all one shape)
    through its own quantizers, fine-tuned together; each gets what `qat_finetune` alone gives it up to
    float rounding (stacked as in `batched.fit_batch`: disjoint parameters, elementwise Adam, one
    schedule). Returns each network's best loss; None for one that `member_cancelled(k)` dropped, which
    is left as it was. Networks without a batched form are fine-tuned one after another."""
    if len(models) == 1 or not batchable(models[0].config):
        return _one_by_one(models, targets, quantizers, options, progress, member_cancelled)
    o = _qat_options(options)
    dev = torch.device(o.device)
    model = BatchedTuner(models).to(dev).train()  # type: ignore[arg-type]
    objective = _objective(model, targets, dev, True, o.chunk_pixels, o.batch_rows)

    def report(step: int, live: list[int], losses: list[float]) -> None:
        if progress is not None:
            for k, loss in zip(live, losses, strict=True):
                progress(k, step, loss)

    try:
        result = train(model, objective, _options(o), stacked=True,
                       quantizers=[dict(q) for q in quantizers], progress=report, member_cancelled=member_cancelled)
    except FitCancelled:  # every member was dropped: each is left as it was
        return [None] * len(models)
    live = [k for k, loss in enumerate(result.losses) if loss is not None]
    for j, k in enumerate(live):
        _load_member(models[k], model, j)
    return result.losses


def _one_by_one(models: Sequence[nn.Module], targets: Sequence[np.ndarray],
                quantizers: Sequence[dict[str, Quantizer]], options: QatOptions | int,
                progress: MemberProgress | None, member_cancelled: Callable[[int], bool] | None) -> list[float | None]:
    import copy

    out: list[float | None] = []
    for k, (model, target, qs) in enumerate(zip(models, targets, quantizers, strict=True)):
        def cancelled(k: int = k) -> str | None:
            return "cancelled" if member_cancelled is not None and member_cancelled(k) else None

        def member_progress(step: int, loss: float, k: int = k) -> None:
            if progress is not None:
                progress(k, step, loss)

        state = copy.deepcopy(model.state_dict())
        try:
            with stop_when(cancelled):
                out.append(qat_finetune(model, target, qs, options, member_progress))
        except FitCancelled:
            if stop_reason():  # the caller stopped everything, not this member
                raise
            model.load_state_dict(state)  # a dropped network is left as it was, as in the batched form
            out.append(None)
    return out


@torch.no_grad()
def _load_member(net: nn.Module, stacked: nn.Module, j: int) -> None:
    params = dict(net.named_parameters())
    for name, p in stacked.named_parameters():
        params[BatchedTuner.net_name(name)].copy_(p[j])
    net.eval()
