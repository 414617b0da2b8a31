"""Rate control: from a target rate (or quality) to a network size and quantization, using a table
measured on benchmark images (tuner_model/rate/table.json, refitted by `tuner bench rc-fit`).

The table gives, at each rate, the hidden-weight levels Q that measured best and the bits per
parameter the entropy coder then spent; the encoder sizes the network so that its parameters fill the
budget, and after fitting searches the exact Q whose blob lands at or just under the target.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from tuner_model.core.errors import ConfigError

TABLE_NAME = "table.json"
HEADER_BYTES = 24  # a typical v2 header + checksum: reserved before sizing the network
MIN_WIDTH, MAX_WIDTH = 4, 1024
# A small budget (a thumbnail at a low rate) takes fewer layers rather than layers narrower than this: the
# depths were measured at 768×512 with 65–153 neurons a layer, and a network clamped at MIN_WIDTH in every
# layer would not fit a budget one layer of a few more neurons fits.
MIN_DEEP_WIDTH = 16


@dataclass(frozen=True)
class RatePoint:
    bpp: float
    levels: int  # Q for the hidden weights
    bits_per_param: float  # what the entropy coder spent per stored parameter at that Q
    psnr: float  # mean PSNR measured at that rate on the fitting images (a guide for --psnr)
    depth: int = 1  # hidden layers, each n wide


@dataclass(frozen=True)
class Plan:
    width: int  # m = n
    levels: int
    bits_per_param: float
    target_bytes: int | None
    depth: int = 1


def table_path() -> Path:
    return Path(str(resources.files("tuner_model.rate") / TABLE_NAME))


@lru_cache(maxsize=4)
def load_table(path: str | None = None) -> tuple[RatePoint, ...]:
    p = Path(path) if path else table_path()
    try:
        doc = json.loads(p.read_text())
        rows = [RatePoint(float(r["bpp"]), int(r["levels"]), float(r["bits_per_param"]), float(r["psnr"]),
                          int(r.get("depth", 1))) for r in doc["rows"]]
        if any(not 1 <= r.depth <= 8 for r in rows):
            raise ValueError("depth outside 1..8")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"rate-control table {p} is unreadable: {e}") from None
    if not rows:
        raise ConfigError(f"rate-control table {p} has no rows")
    return tuple(sorted(rows, key=lambda r: r.bpp))


def _interp(rows: tuple[RatePoint, ...], x: float, key: str, by: str = "bpp") -> float:
    """Piecewise linear in log(bpp) (in psnr when `by` is psnr), clamped at the ends."""
    xs = [getattr(r, by) for r in rows]
    ys = [getattr(r, key) for r in rows]
    f = math.log if by == "bpp" else (lambda v: v)
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            t = (f(x) - f(xs[i - 1])) / (f(xs[i]) - f(xs[i - 1]))
            return ys[i - 1] + t * (ys[i] - ys[i - 1])
    return ys[-1]


def tuner_parameters(width: int, channels: int = 3, depth: int = 1) -> int:
    """Stored parameters of a TUNER net with m = n = width and `depth` hidden layers: the phases, each
    layer's weights and biases, the output layer."""
    return width + depth * (width * width + width) + channels * width + channels


def width_for_params(params: float, channels: int = 3, depth: int = 1) -> int:
    """The widest m = n whose network of `depth` hidden layers has at most `params` parameters."""
    b = depth + 1 + channels
    n = int((-b + math.sqrt(b * b + 4 * depth * max(params - channels, 1))) / (2 * depth))
    return max(MIN_WIDTH, min(MAX_WIDTH, n))


def _nearest(rows: tuple[RatePoint, ...], bpp: float) -> RatePoint:
    """The row nearest `bpp` in log rate (the lower one on a tie)."""
    return min(rows, key=lambda r: (round(abs(math.log(r.bpp) - math.log(max(bpp, 1e-9))), 9), r.bpp))


def plan_for_bpp(bpp: float, width: int, height: int, channels: int = 3,
                 table: tuple[RatePoint, ...] | None = None) -> Plan:
    rows = table or load_table()
    levels = max(1, round(_interp(rows, bpp, "levels")))
    bpp_param = _interp(rows, bpp, "bits_per_param")
    budget = math.floor(bpp * width * height / 8)
    params = max(0, budget - HEADER_BYTES) * 8 / bpp_param
    depth = _nearest(rows, bpp).depth  # a count: the measured row's, not an interpolation
    while depth > 1 and width_for_params(params, channels, depth) < MIN_DEEP_WIDTH:
        depth -= 1
    return Plan(width_for_params(params, channels, depth), levels, bpp_param, budget, depth)


def max_parameters(width: int, height: int, channels: int = 3) -> int:
    """The most parameters an encode of a width×height image can store (the network the highest accepted
    rate plans), with a margin for the level search's and a retune's small changes: a bound the service
    holds a blob made elsewhere to."""
    from tuner_model.rate.request import BPP_MAX

    top = plan_for_bpp(BPP_MAX, width, height, channels)
    planned = tuner_parameters(top.width, channels, top.depth)
    return int(planned * 1.25) + 1024


def bpp_for_psnr(psnr: float, table: tuple[RatePoint, ...] | None = None) -> float:
    """The rate the table expects to reach `psnr` (extrapolated by the end slopes, clamped)."""
    rows = table or load_table()
    if psnr <= rows[0].psnr:
        return rows[0].bpp
    if psnr >= rows[-1].psnr:
        a, b = rows[-2], rows[-1]
        slope = (b.psnr - a.psnr) / math.log2(b.bpp / a.bpp)  # dB per doubling
        return min(16.0, b.bpp * 2 ** ((psnr - b.psnr) / max(slope, 0.5)))
    return _bpp_by_psnr(rows, psnr)


def _bpp_by_psnr(rows: tuple[RatePoint, ...], psnr: float) -> float:
    pts = sorted((r.psnr, math.log(r.bpp)) for r in rows)
    for (p0, l0), (p1, l1) in zip(pts[:-1], pts[1:], strict=True):
        if p0 <= psnr <= p1:
            t = 0.0 if p1 == p0 else (psnr - p0) / (p1 - p0)
            return math.exp(l0 + t * (l1 - l0))
    return math.exp(pts[-1][1])


def psnr_slope(table: tuple[RatePoint, ...] | None = None) -> float:
    """Mean dB gained per doubling of the rate over the table (used to correct a --psnr miss)."""
    rows = table or load_table()
    if len(rows) < 2:
        return 3.0
    return max(0.5, (rows[-1].psnr - rows[0].psnr) / math.log2(rows[-1].bpp / rows[0].bpp))
