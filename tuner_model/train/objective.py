"""What one training step minimises: each network's mean squared error over the step's pixels, with the
gradients left on the tensors it was given. Two ways to compute it, one contract:

- `GridObjective`: the training set is a pixel grid (the whole image, a grid with a 0/1 mask, or a
  random subset of its rows each step): TUNER's separable first layer and fused tiles (grid.py);
- `DenseObjective`: any coordinates (SIREN, FFM, random pixel mini-batches): the network's own forward
  pass over chunks of pixels with gradient accumulation, so memory is bounded whatever the image size.

Both hold K >= 1 targets, one per stacked network, and drop members as the loop drops networks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from tuner_model.core.coords import axis_centres, extent, pixel_grid
from tuner_model.models.stacked import BatchedTuner
from tuner_model.models.tuner import TunerNet
from tuner_model.train import grid as grid_mod


class Objective(Protocol):
    def losses(self, model: nn.Module, params: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
        """Backpropagates the step's K losses into `params` (leaves) and returns them, detached."""

    def drop(self, keep: list[int]) -> None:
        """Keeps only the members at positions `keep`."""


def stacked_targets(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """(K, H, W, C) float32 on `device` from K (H, W, C) arrays."""
    return torch.stack([torch.as_tensor(np.ascontiguousarray(im), dtype=torch.float32) for im in images]).to(device)


class _Epochs:
    """Batches of `batch` of the indices 0..n-1 as shuffled epochs (every index once per epoch, as in the
    paper's protocol); None when a batch is all of them."""

    def __init__(self, n: int, batch: int, gen: torch.Generator, device: torch.device) -> None:
        self.n, self.batch, self.gen, self.device = n, batch, gen, device
        self.perm: torch.Tensor | None = None
        self.cursor = n

    def next(self) -> torch.Tensor | None:
        if self.batch == self.n:
            return None
        if self.cursor + self.batch > self.n:
            self.perm, self.cursor = torch.randperm(self.n, generator=self.gen, device=self.device), 0
        idx = self.perm[self.cursor : self.cursor + self.batch]
        self.cursor += self.batch
        return idx


def _backward(model: nn.Module, per: torch.Tensor, penalty: bool) -> torch.Tensor:
    """Backpropagates the sum of the K losses (plus the model's penalty, once, when asked) and returns the
    K losses, detached, each with the penalty in it."""
    loss = per.sum()
    pen = model.penalty() if penalty else None
    if pen is not None:
        loss = loss + pen
        per = per + pen.detach()
    loss.backward()
    return per.detach()


class DenseObjective:
    """Chunked forward/backward over coordinates; optional shuffled mini-batches of `batch_pixels`."""

    def __init__(self, images: list[np.ndarray], device: torch.device, stacked: bool,
                 mask: np.ndarray | None = None, batch_pixels: int | None = None, chunk_pixels: int = 1 << 18,
                 seed: int = 0, penalty: bool = True) -> None:
        h, w, c = images[0].shape
        coords = pixel_grid(w, h, (w, h), device=device)
        values = stacked_targets(images, device).reshape(len(images), -1, c)
        if mask is not None:
            keep = torch.as_tensor(mask.reshape(-1), device=device)
            coords, values = coords[keep], values[:, keep]
        self.coords, self.values, self.stacked, self.penalty = coords, values, stacked, penalty
        n = coords.shape[0]
        self.batch = n if batch_pixels is None else min(batch_pixels, n)
        # The same activation memory as one network's chunk, whatever K.
        self.chunk = chunk_pixels if not stacked else max(1024, chunk_pixels // len(images))
        self.pixels = _Epochs(n, self.batch, torch.Generator(device=device).manual_seed(seed), device)

    def losses(self, model: nn.Module, params: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
        idx = self.pixels.next()
        k_count, c = self.values.shape[0], self.values.shape[2]
        total = torch.zeros(k_count, device=self.coords.device)
        plain = all(params[name] is p for name, p in model.named_parameters())
        for lo in range(0, self.batch, self.chunk):
            hi = min(self.batch, lo + self.chunk)
            sel = slice(lo, hi) if idx is None else idx[lo:hi]
            pred = model(self.coords[sel]) if plain else functional_call(model, dict(params), (self.coords[sel],))
            if not self.stacked:
                pred = pred[None]
            per = ((pred - self.values[:, sel]) ** 2).sum(dim=(1, 2)) / (self.batch * c)
            total += _backward(model, per, self.penalty and lo == 0)
        return total

    def drop(self, keep: list[int]) -> None:
        self.values = self.values[keep]


@dataclass(frozen=True)
class SubGrid:
    """The random sub-grid each grid step sees: `rows` × `cols` of the image (None: all), drawn from `seed`."""

    rows: int | None = None
    cols: int | None = None
    seed: int = 0


class GridObjective:
    """TUNER networks on the image's pixel grid: every row each step, or `batch_rows` rows drawn as
    shuffled epochs of the rows (stochastic over rows, keeping the separable structure)."""

    def __init__(self, images: list[np.ndarray], device: torch.device, stacked: bool, model: nn.Module,
                 mask: np.ndarray | None = None, sub_grid: SubGrid = SubGrid(), penalty: bool = True) -> None:
        batch_rows, batch_cols, seed = sub_grid.rows, sub_grid.cols, sub_grid.seed
        h, w, c = images[0].shape
        sx, sy = extent(w, h)
        xs = axis_centres(w, sx, device=device).to(torch.float64)
        ys = axis_centres(h, sy, device=device).to(torch.float64)
        cfg = model.config
        self.sep = grid_mod.separable(model.k, cfg.period, xs, ys)
        self.target = stacked_targets(images, device).permute(0, 1, 3, 2).contiguous()  # (K, H, C, W)
        self.weight = None if mask is None else torch.as_tensor(mask, dtype=torch.float32, device=device)

        self.stacked, self.penalty, self.c = stacked, penalty, c
        self.depth, self.omega, self.learn_bounds = len(cfg.hidden), cfg.hidden_omega, cfg.learn_bounds
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.rows = _Epochs(h, h if batch_rows is None else max(1, min(batch_rows, h)), self.gen, device)
        self.w, self.cols = w, w if batch_cols is None else max(1, min(batch_cols, w))
        self.last_sample: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)  # (rows, columns) drawn

    def losses(self, model: nn.Module, params: Mapping[str, torch.Tensor], step: int) -> torch.Tensor:
        rows = self.rows.next()
        if rows is not None:
            rows = rows.sort().values
        t = grid_mod.tuner_tensors(params, self.omega, self.depth, self.stacked, self.learn_bounds)
        target = self.target if rows is None else self.target[:, rows]
        weight = self.weight if (rows is None or self.weight is None) else self.weight[rows]
        sep, cols = self.sep, None
        if self.cols < self.w:  # and a random subset of the columns: a random sub-grid
            cols = torch.randperm(self.w, generator=self.gen, device=target.device)[: self.cols].sort().values
            sep = dataclasses.replace(sep, e=sep.e[:, cols].contiguous())
            target = target[..., cols]
            weight = None if weight is None else weight[:, cols]
        self.last_sample = (rows, cols)
        # The mean over the pixels this step sees (the mask's training pixels among them).
        pixels = target.shape[1] * target.shape[3] if weight is None else float(weight.sum())
        denominator = max(1.0, pixels) * self.c
        per = grid_mod.grid_losses(sep, t, target, weight, denominator, rows)
        return _backward(model, per, self.penalty)

    def drop(self, keep: list[int]) -> None:
        self.target = self.target[keep]


def grid_applies(model: nn.Module) -> bool:
    """Whether `model` can train on the grid path: TUNER networks, single or stacked."""
    return isinstance(model, TunerNet | BatchedTuner)
