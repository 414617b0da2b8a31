"""Fitting several images at once: K TUNER networks held as batched weights (a leading K dimension,
torch.bmm), so one worker drains its queue with a few large kernels instead of many small ones.

The math mirrors `models.tuner.TunerNet` and `fit.fit` exactly: the same initial weights (each network
is built from `options.seed`), the same frozen frequencies, the same loss (each network's mean squared
error; the networks' losses are summed, and as their parameters are disjoint each gets exactly the
gradient it would get alone), Adam (elementwise, so stacking changes nothing) with the same parameter
groups, gradient-norm clipping per network (each network's own norm, as it would be alone), the same
learning-rate schedule, mini-batches and per-column clamp after every step. Only float rounding differs.

Networks the batched path does not cover (SIREN, FFM, learned bounds) are fitted one after another.
The loop is loop.py's, the step the objective's (the grid path for stacked TUNER networks too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from tuner_model.core import colour as colour_mod
from tuner_model.core.device import resolve_device
from tuner_model.core.errors import ConfigError, FitCancelled
from tuner_model.core.metrics import mse_to_psnr
from tuner_model.models import ModelConfig, build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.models.tuner import TunerNet
from tuner_model.train.fit import FitOptions, FitProgress, fit_image, loop_options, make_objective
from tuner_model.train.loop import train


class BatchedTuner(torch.nn.Module):
    """K TUNER networks of one configuration: parameters stacked along a leading K dimension."""

    def __init__(self, nets: Sequence[TunerNet]) -> None:
        super().__init__()
        first = nets[0]
        self.config: ModelConfig = first.config
        self.register_buffer("k", first.k.clone(), persistent=False)
        self.register_buffer("omega", first.omega.clone(), persistent=False)
        self.phase = torch.nn.Parameter(torch.stack([n.phase.detach() for n in nets]))  # (K, m)
        self.hidden = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.stack([n.hidden[i].detach() for n in nets])) for i in range(len(first.hidden))])
        self.hidden_bias = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.stack([n.hidden_bias[i].detach() for n in nets]))
             for i in range(len(first.hidden))])
        self.out_weight = torch.nn.Parameter(torch.stack([n.out.weight.detach() for n in nets]))  # (K, C, n)
        self.out_bias = torch.nn.Parameter(torch.stack([n.out.bias.detach() for n in nets]))  # (K, C)
        # The clamp bound per entry of each hidden matrix; identical for every network of one config.
        for i in range(len(first.hidden)):
            bound = first.weight_bound(i).detach().clone() / self.config.hidden_omega
            self.register_buffer(f"bound{i}", bound, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2) shared coordinates → (K, N, C)."""
        wh = self.config.hidden_omega
        y = torch.sin((x @ self.omega.T)[None] + self.phase[:, None, :])  # (K, N, m)
        for v, b in zip(self.hidden, self.hidden_bias, strict=True):
            y = torch.sin(torch.baddbmm((wh * b)[:, None, :], y, (wh * v).transpose(1, 2)))
        return torch.baddbmm(self.out_bias[:, None, :], y, self.out_weight.transpose(1, 2))

    def penalty(self) -> None:
        return None  # learned bounds have no batched form

    @torch.no_grad()
    def project(self) -> None:
        for i, v in enumerate(self.hidden):
            bound = getattr(self, f"bound{i}")
            torch.maximum(torch.minimum(v, bound), -bound, out=v)

    @staticmethod
    def net_name(name: str) -> str:
        """The TunerNet parameter that a stacked parameter holds (`out_weight` is `out.weight`)."""
        return {"out_weight": "out.weight", "out_bias": "out.bias"}.get(name, name)

    def unstack(self, k: int, seed: int) -> TunerNet:
        """Network k as a plain TunerNet on the CPU."""
        net = build_model(self.config, seed=seed)
        assert isinstance(net, TunerNet)
        with torch.no_grad():
            net.phase.copy_(self.phase[k])
            for i in range(len(net.hidden)):
                net.hidden[i].copy_(self.hidden[i][k])
                net.hidden_bias[i].copy_(self.hidden_bias[i][k])
            net.out.weight.copy_(self.out_weight[k])
            net.out.bias.copy_(self.out_bias[k])
        return net.eval()


def batchable(config: ModelConfig) -> bool:
    return config.arch == "tuner" and not config.learn_bounds


def fit_batch(images: Sequence[np.ndarray], config: ModelConfig, options: FitOptions = FitOptions(),
              progress: Callable[[FitProgress], None] | None = None, colour: str | None = None,
              should_cancel: Callable[[], bool] | None = None,
              member_cancelled: Callable[[int], bool] | None = None,
              member_progress: Callable[[int, FitProgress], None] | None = None) -> list[FittedImage | None]:
    """Fit one network of `config` to each image (all the same (H, W, C) shape), all at once on one device.
    Results match `image_model.fit_image` on each image with the same options up to float rounding.

    `should_cancel` stops the whole batch (FitCancelled). `member_cancelled(k)`, polled every step for each
    image k still fitting, drops that image alone: its result is None and the others go on exactly as
    before; when every image is dropped the fit raises FitCancelled. `member_progress(k, p)` reports each
    image's own loss alongside `progress`, which gets the mean."""
    if not images:
        return []
    shape = images[0].shape
    if any(im.shape != shape for im in images):
        raise ConfigError("fit_batch needs images of one size and channel count")
    h, w, c = shape
    colour = colour or ("gray" if c == 1 else "rgb")
    colour_mod.check(colour, c)
    if config.channels != c:
        raise ConfigError(f"the configuration has {config.channels} channels, the images {c}")
    if not batchable(config):
        return _fit_one_by_one(images, config, options, colour, progress, should_cancel, member_cancelled)

    device = resolve_device(options.device)
    torch.manual_seed(options.seed)
    nets = [build_model(config, seed=options.seed) for _ in images]
    model = BatchedTuner(nets).to(device).train()  # type: ignore[arg-type]
    targets = [colour_mod.forward(im, colour) for im in images]
    with torch.no_grad():  # fit._init_output_bias, per network
        model.out_bias.copy_(torch.stack([torch.as_tensor(t.reshape(-1, c).mean(axis=0, dtype=np.float64),
                                                          dtype=torch.float32) for t in targets]))
    objective = make_objective(model, targets, options, device, stacked=True)

    def report(step: int, live: list[int], losses: list[float]) -> None:
        if progress is not None:
            mean = sum(losses) / len(losses)
            progress(FitProgress(step, options.steps, mean, mse_to_psnr(mean)))
        if member_progress is not None:
            for k, loss in zip(live, losses, strict=True):
                member_progress(k, FitProgress(step, options.steps, loss, mse_to_psnr(loss)))

    result = train(model, objective, loop_options(options), stacked=True, progress=report,
                   should_cancel=should_cancel, member_cancelled=member_cancelled)
    live = [k for k, loss in enumerate(result.losses) if loss is not None]
    results: list[FittedImage | None] = [None] * len(images)
    for j, k in enumerate(live):
        net = model.unstack(j, options.seed)
        fitted = FittedImage(config, w, h, net, colour)
        fitted.meta.update(steps=options.steps, seconds=round(result.seconds, 3), device=str(device),
                           batch=len(images))
        fitted.meta["psnr"] = round(fitted.measure_psnr(images[k]), 4)
        results[k] = fitted
    return results


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


def _fit_one_by_one(images: Sequence[np.ndarray], config: ModelConfig, options: FitOptions, colour: str,
                    progress: Callable[[FitProgress], None] | None, should_cancel: Callable[[], bool] | None,
                    member_cancelled: Callable[[int], bool] | None) -> list[FittedImage | None]:
    """Architectures without a batched form: one fit after another, with the same cancellation contract."""
    results: list[FittedImage | None] = []
    for k, im in enumerate(images):
        def cancelled(k: int = k) -> bool:
            return (should_cancel is not None and should_cancel()) or (
                member_cancelled is not None and member_cancelled(k))
        try:
            results.append(fit_image(im, config, options, colour, progress, cancelled))
        except FitCancelled:
            if should_cancel is not None and should_cancel():
                raise
            results.append(None)
    if results and all(r is None for r in results):
        raise FitCancelled("every image of the batch was cancelled")
    return results


__all__ = ["BatchedTuner", "batchable", "clip_per_network", "drop_members", "fit_batch"]
