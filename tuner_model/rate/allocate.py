"""Allocating a tiled image's bytes among its tiles by their rate–distortion slopes (issue 28, item 2).

The whole image's distortion is the sum of its tiles' (the same pixel count each), so for a fixed total the
tiles should spend bytes where a byte buys the most: at the optimum every tile's distortion falls equally
fast per bit, dD_i/dR_i = −λ. Equal bytes are that optimum only when the tiles are alike; a tile of sky and
a tile of foliage are not.

Each tile's curve is modelled before it is fitted, by a probe: the tile as JPEG at two qualities gives two
(rate, MSE) points and a power law through them, D_i(R) = c_i·R^(−γ_i) (straight on a log–log plot, as
transform codecs are over this range). The network's curve is not JPEG's, but what the allocation needs is
how the tiles differ from each other, which the probe sees (smooth tiles are cheap for both). Then

    γ_i·c_i·R_i^(−γ_i − 1) = λ   ⇒   R_i = (γ_i·c_i / λ)^(1 / (γ_i + 1)),

with λ found by bisection so that the rates add up to the total. Each rate is kept within [1/2, 2]× the
mean, a bound on how far a wrong model can move bytes. Milliseconds per tile; no torch (numpy and Pillow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tuner_model.core.classical import decode, encode_at, to_pil
from tuner_model.rate.tile_plan import MIN_TILE_BYTES, TiledPlan, tile_budgets

PROBE_QUALITIES = (40, 80)
SHARE_MIN, SHARE_MAX = 0.5, 2.0  # a tile's rate, as a multiple of the mean
GAMMA_MIN, GAMMA_MAX = 0.2, 4.0


@dataclass(frozen=True)
class RateModel:
    """D(R) = c·R^(−gamma): a tile's MSE (peak 1) at R bits per pixel."""

    c: float
    gamma: float

    def mse(self, bpp: float) -> float:
        return self.c * bpp ** -self.gamma


def probe(tile: np.ndarray) -> RateModel:
    """A tile's rate model from its JPEG at the two probe qualities."""
    pil = to_pil(tile)
    mode = "L" if tile.shape[2] == 1 else "RGB"
    pixels = tile.shape[0] * tile.shape[1]
    points = []
    for q in PROBE_QUALITIES:
        data = encode_at(pil, "jpeg", q)
        err = float(np.mean((decode(data, mode).astype(np.float64) - tile.astype(np.float64)) ** 2))
        points.append((8 * len(data) / pixels, max(err, 1e-10)))
    (r1, d1), (r2, d2) = points
    gamma = -math.log(d2 / d1) / math.log(r2 / r1) if r2 > r1 else 1.0
    gamma = min(GAMMA_MAX, max(GAMMA_MIN, gamma))
    return RateModel(d1 * r1 ** gamma, gamma)


def allocate(models: list[RateModel], mean_bpp: float) -> list[float]:
    """Each tile's rate (bits per pixel) for a mean of `mean_bpp`: equal slopes, within [SHARE_MIN, SHARE_MAX]
    of the mean; the rates average exactly `mean_bpp`."""
    lo_r, hi_r = SHARE_MIN * mean_bpp, SHARE_MAX * mean_bpp

    def rates(log_lam: float) -> list[float]:
        return [min(hi_r, max(lo_r, math.exp((math.log(m.gamma * m.c) - log_lam) / (m.gamma + 1))))
                for m in models]

    lo, hi = -200.0, 200.0  # log λ: the total falls as λ grows
    for _ in range(200):
        mid = (lo + hi) / 2
        if sum(rates(mid)) > mean_bpp * len(models):
            lo = mid
        else:
            hi = mid
    out = rates(hi)  # at most the total
    scale = mean_bpp * len(models) / sum(out)
    return [r * scale for r in out]


def slope_budgets(tiles: list[np.ndarray], payload: int, least: int = 0) -> list[int]:
    """The tiles' byte budgets (one shape each) out of `payload` bytes, by their rate-distortion slopes: each
    at least `least` (taken from the others in proportion to what they have above it), in all at most
    `payload`."""
    n = len(tiles)
    pixels = tiles[0].shape[0] * tiles[0].shape[1]
    if payload < least * n:
        raise ValueError(f"{payload} bytes cannot give {n} tiles {least} each")
    rates = allocate([probe(t) for t in tiles], 8 * payload / (n * pixels))
    budgets = [r * pixels / 8 for r in rates]
    deficit = sum(max(0.0, least - b) for b in budgets)
    if deficit > 0:
        above = [max(0.0, b - least) for b in budgets]
        budgets = [least + a * (1 - deficit / sum(above)) for a in above]
    out = [math.floor(b) for b in budgets]
    while sum(out) > payload:  # rounding: never over
        out[out.index(max(out))] -= 1
    return out


def allocated(plan: TiledPlan, tiles: list[np.ndarray]) -> TiledPlan:
    """`plan` with each tile's budget, once its tiles are seen: by their rate-distortion slopes, or equal
    shares (`plan.allocation`)."""
    if plan.budgets is not None:
        return plan
    if plan.allocation == "equal":
        return plan.with_budgets(tile_budgets(plan.budget, plan.grid))
    return plan.with_budgets(slope_budgets(tiles, plan.payload, MIN_TILE_BYTES))


__all__ = ["RateModel", "allocate", "allocated", "probe", "slope_budgets"]
