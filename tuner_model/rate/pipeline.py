"""An encode plan's phases run on K >= 1 images of one shape: the float fit and the fine-tuning as runs of the
one training loop over all K networks at once (one network alone when K = 1), the level search between them
per image, then `finish` per image: search Q again, fine-tune again if it landed lower, snap the weights to the
grid, measure the PSNR of exactly what decoding gives, write the blob. A network that cannot fit the budget
even at Q = 1 is shrunk and its image fitted again, alone (docs/CODEC.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tuner_model.codec import encode_blob
from tuner_model.codec.quant import QuantSpec, plan, snap
from tuner_model.core import colour as colour_mod
from tuner_model.core.errors import ConfigError, FitCancelled, TunerError
from tuner_model.core.progress import Progress
from tuner_model.core.stop import MemberCheck, stop_when
from tuner_model.models import build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.rate import table
from tuner_model.rate.effort import Phase, PhaseKind
from tuner_model.rate.levels import search_levels
from tuner_model.rate.plan import EncodePlan
from tuner_model.render.fitted import measure_psnr
from tuner_model.train import fused, native
from tuner_model.train.batched import fit_batch
from tuner_model.train.fit import FitOptions, fit
from tuner_model.train.qat import QatOptions, qat_finetune_batch

PhaseProgress = Callable[[PhaseKind, int, float, float], None]  # (phase, step in it, loss, psnr)


class Meter:
    """One image's progress over its whole encode, as one monotonic Progress: a phase's step becomes the
    fraction of the attempt's time done (EncodePlan.progress_at), placed in the attempt's slice of the
    encode (a quality target's later attempts get the rest), then a step of `total`."""

    def __init__(self, sink: Callable[[Progress], None] | None, total: int) -> None:
        self.sink, self.total, self.done = sink, max(1, total), 0

    def report(self, frac: float, phase: str, loss: float, psnr: float) -> None:
        step = min(self.total, int(round(frac * self.total)))
        if step > self.done:  # never backwards, never the same step twice
            self.done = step
            if self.sink is not None:
                self.sink(Progress(phase, step, self.total, loss, psnr))

    def attempt(self, plan: EncodePlan, lo: float, hi: float) -> PhaseProgress:
        return lambda kind, step, loss, psnr: self.report(lo + plan.progress_at(kind, step) * (hi - lo), kind, loss,
                                                           psnr)


class OverBudget(Exception):
    """Even Q = 1 does not fit the budget: the network is too big and is refitted smaller."""

    def __init__(self, after_qat: bool) -> None:
        super().__init__("over budget")
        self.after_qat = after_qat


@dataclass
class Tuned:
    """An image's network after the training phases of its first attempt: fitted, and, once `levels` is set,
    fine-tuned at that Q. `levels` None: over the budget even at Q = 1 (to be refitted smaller)."""

    fitted: FittedImage
    seconds: float
    levels: int | None = None


def fit_options(p: EncodePlan, phase: Phase, device: str) -> FitOptions:
    return FitOptions(steps=phase.steps, lr=phase.lr, warmup=phase.warmup, final_lr_fraction=phase.final_lr,
                      device=device, seed=p.seed, progress_every=max(1, min(10, phase.steps // 20)),
                      batch_rows=p.rows(phase), batch_cols=p.cols(phase), betas=phase.betas,
                      clip_grad_norm=phase.clip, phase_lr_mult=phase.phase_lr_mult)


def qat_options(p: EncodePlan, phase: Phase, device: str, steps: int | None = None) -> QatOptions:
    return QatOptions(steps or phase.steps, lr=phase.lr, final_lr=phase.final_lr, device=device,
                      batch_rows=p.rows(phase))


def unquantized(p: EncodePlan, model: torch.nn.Module) -> FittedImage:
    # psnr is a fixed-size f32 in the header: a placeholder now makes the size search exact.
    return FittedImage(p.model, p.width, p.height, model, p.colour, {"psnr": 0.0, "steps": p.total_steps})


def _fit(p: EncodePlan, phase: Phase, targets: Sequence[np.ndarray], device: str,
         progress: Sequence[PhaseProgress], member_stopped: MemberCheck | None) -> list[Tuned | None]:
    """The fit phase of every image: one network alone (K = 1), or K stacked in one run of the loop."""
    options = fit_options(p, phase, device)
    if len(targets) == 1:
        model = build_model(p.model, seed=p.seed)
        try:
            with stop_when(None if member_stopped is None else lambda: "cancelled" if member_stopped(0) else None):
                result = fit(model, targets[0], options,
                             progress=lambda q: progress[0]("fit", q.step, q.loss, q.psnr))
        except FitCancelled:
            if member_stopped is not None and member_stopped(0):
                return [None]  # this member was stopped, as a stacked fit drops it
            raise
        return [Tuned(unquantized(p, result.model.cpu()), result.seconds)]
    try:
        fits = fit_batch(targets, p.model, options, colour="rgb" if p.channels == 3 else "gray",
                         member_cancelled=member_stopped,
                         member_progress=lambda k, q: progress[k]("fit", q.step, q.loss, q.psnr))
    except FitCancelled:
        return [None] * len(targets)
    return [None if f is None else Tuned(unquantized(p, f.model), float(f.meta["seconds"])) for f in fits]


def first_levels(p: EncodePlan, fitted: FittedImage) -> int | None:
    """The Q to fine-tune at: the table's, or the largest whose blob fits (None when none does)."""
    return p.levels if p.fixed_levels else search_levels(fitted, QuantSpec(p.levels), p.budget)


def _qat(p: EncodePlan, phase: Phase, tuned: list[Tuned | TunerError | None], targets: Sequence[np.ndarray],
         device: str, progress: Sequence[PhaseProgress], member_stopped: MemberCheck | None) -> None:
    """The fine-tuning of every image with a Q, each through its own quantizers, as one run of the loop."""
    members = [i for i, t in enumerate(tuned) if isinstance(t, Tuned) and t.levels is not None]
    if not members or not phase.steps:
        return
    nets = [tuned[i] for i in members]
    losses = qat_finetune_batch(
        [t.fitted.model for t in nets], [targets[i] for i in members],
        [plan(t.fitted.model, QuantSpec(p.levels).with_levels(t.levels)) for t in nets], qat_options(p, phase, device),
        progress=lambda k, step, loss: progress[members[k]]("qat", step, loss, _psnr(loss)),
        member_cancelled=None if member_stopped is None else lambda k: member_stopped(members[k]))
    for i, t, loss in zip(members, nets, losses, strict=True):
        t.fitted.model.cpu()
        if loss is None:
            tuned[i] = None


def _psnr(loss: float) -> float:
    return 10 * float(np.log10(1 / max(loss, 1e-12)))


def train_phases(p: EncodePlan, targets: Sequence[np.ndarray], device: str, progress: Sequence[PhaseProgress],
                 member_stopped: MemberCheck | None = None) -> list[Tuned | TunerError | None]:
    """The plan's phases up to `finish`, on every image at once. Per image: Tuned; an error of its own; or
    None when the member check stopped it."""
    tuned: list[Tuned | TunerError | None] = []
    for phase in p.phases:
        if phase.kind == "fit":
            tuned = list(_fit(p, phase, targets, device, progress, member_stopped))
        elif phase.kind == "levels":
            for i, t in enumerate(tuned):
                if isinstance(t, Tuned):
                    if member_stopped is not None and member_stopped(i):
                        tuned[i] = None
                        continue
                    try:
                        t.levels = first_levels(p, t.fitted)
                    except TunerError as e:
                        tuned[i] = e
        elif phase.kind == "qat":
            _qat(p, phase, tuned, targets, device, progress, member_stopped)
    return tuned


def finish(p: EncodePlan, image: np.ndarray, target: np.ndarray, t: Tuned, device: str,
           progress: PhaseProgress | None) -> tuple[FittedImage, bytes]:
    """After fine-tuning at Q = t.levels: search again, snap, PSNR, blob.

    Fine-tuning moves the weights, so the blob at q can end a few bytes over the budget and the search
    lands one Q lower; the weights are then fine-tuned again, more briefly (the finish phase's steps), at
    the Q they will be stored with."""
    if t.levels is None:
        raise OverBudget(after_qat=False)
    fitted, q = t.fitted, t.levels
    spec = QuantSpec(p.levels).with_levels(q)
    report = {"levels_tuned": q, "retuned": False}  # reported with the result, not stored in the blob
    phase = p.phase("finish")
    if not p.fixed_levels:
        q2 = search_levels(fitted, spec, p.budget, hi=max(q * 2, 4), guess=q)
        if q2 is None:
            raise OverBudget(after_qat=True)
        if q2 < q and phase is not None and phase.steps:
            report["retuned"] = True
            qat_finetune_batch([fitted.model], [target], [plan(fitted.model, QuantSpec(p.levels).with_levels(q2))],
                               qat_options(p, phase, device))
            fitted.model.cpu()
            q3 = search_levels(fitted, spec, p.budget, hi=q2, guess=q2)  # no finer than it was tuned at
            if q3 is None:
                raise OverBudget(after_qat=True)
            q2 = q3
        spec = spec.with_levels(q2)
    report["levels"] = spec.levels
    quantizers = plan(fitted.model, spec)
    snap(fitted.model, quantizers)
    fitted.meta["psnr"] = round(measure_psnr(fitted, image), 4)
    blob = encode_blob(fitted, quantizers=quantizers)
    if len(blob) > p.budget:  # cannot happen while the header's fields keep their sizes; never lie
        raise ConfigError(f"internal: blob of {len(blob)} bytes over the {p.budget}-byte budget")
    fitted.meta["seconds"] = round(t.seconds, 3)  # reported, not stored: every byte counts
    fitted.meta.update(report)
    if progress is not None:
        progress("finish", 1, float("nan"), fitted.meta["psnr"])
    return fitted, blob


def encode_one(p: EncodePlan, image: np.ndarray, device: str, progress: PhaseProgress,
               first: Tuned | None = None) -> tuple[FittedImage, bytes]:
    """One image at the plan's rate: its first attempt's phases already run (`first`, by a batch) or run
    here, then finish; while the network cannot fit the budget, a narrower one is fitted again."""
    target = colour_mod.forward(image, p.colour)
    attempt = p
    for n in range(4):
        if n or first is None:
            t = train_phases(attempt, [target], device, [progress])[0]
            if isinstance(t, TunerError):
                raise t
            if t is None:  # unreachable without a member check; kept total
                raise FitCancelled("cancelled")
        else:
            t = first
        try:
            return finish(attempt, image, target, t, device, progress)
        except OverBudget as e:  # too big for the budget even at the fewest levels: shrink and refit
            net_width = max(table.MIN_WIDTH, int(attempt.model.input_width * 0.75))
            attempt = attempt.with_network(net_width)
            if not e.after_qat and net_width == table.MIN_WIDTH and n:
                break
    raise ConfigError(f"{p.bpp} bpp is too small a budget for a {p.width}x{p.height} image")


COMPILE_AFTER_S = 30.0  # compiling the fused backward costs ~3.5 s once per process and saves ~12 % a step


def compile_if_worth_it(p: EncodePlan, device: str) -> None:
    """Compile the grid path's fused backward for a CPU encode long enough to pay for it (train/grid.py),
    unless the native top layer (train/native.py), which the encoder's networks take before it, is built."""
    if device != "cpu" or fused.fused_in_use() or native.load() is not None:
        return
    if p.attempt_seconds() > COMPILE_AFTER_S:
        fused.warm_up()
