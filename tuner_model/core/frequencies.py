"""Spectral sampling of TUNER's frozen integer input frequencies (TUNER.md §2.2).

Frequencies are integer vectors k in the half plane (kx > 0, or kx == 0 and ky > 0); the input
weight is w = (2π/p)·k, so the network is p-periodic and its spectrum lies on (2π/p)Z² (Theorem 1).
The set is: the fundamentals (1,0) and (0,1), a dense low block max(|kx|,|ky|) <= L, and a sparse
regular grid reaching the bandlimit B. No duplicates, never (0,0).

Selection uses a keyed integer hash (SplitMix64) instead of numpy's Generator, whose streams may change
between numpy releases: a blob stores only the seed and these parameters, so regenerating the same set
on any machine, any version, forever, is part of the file format.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from tuner_model.core.errors import ConfigError

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _keyed_order(points: list[tuple[int, int]], seed: int, salt: int) -> list[tuple[int, int]]:
    """A deterministic pseudo-random permutation of `points`, stable across platforms and versions."""

    def key(p: tuple[int, int]) -> int:
        h = _splitmix64((seed & _MASK64) ^ (salt * 0x632BE59BD9B4E019 & _MASK64))
        h = _splitmix64(h ^ ((p[0] + (1 << 20)) & _MASK64))
        return _splitmix64(h ^ ((p[1] + (1 << 20)) & _MASK64))

    return sorted(points, key=key)


def in_half_plane(kx: int, ky: int) -> bool:
    return kx > 0 or (kx == 0 and ky > 0)


def canonical(kx: int, ky: int) -> tuple[int, int]:
    """The half-plane representative of ±k (sin(-θ) = -sin θ: the sign is absorbed by W and φ)."""
    return (kx, ky) if in_half_plane(kx, ky) else (-kx, -ky)


@dataclass(frozen=True)
class FrequencySpec:
    """What determines the input frequencies. Everything here is stored in a blob; k itself never is."""

    count: int  # m, the number of input neurons, fundamentals included
    bandlimit: int  # B: the largest |component| of k (integer units of 2π/p)
    block_limit: int = 10  # L: the low block is max(|kx|, |ky|) <= L
    low_fraction: float = 0.7  # ρ: share of the non-fundamental slots given to the low block
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.count <= 65536:
            raise ConfigError(f"input width must be in 2..65536, got {self.count}")
        if not 1 <= self.block_limit <= 4096:
            raise ConfigError(f"block limit must be in 1..4096, got {self.block_limit}")
        if not self.block_limit <= self.bandlimit <= 1 << 16:
            raise ConfigError(f"bandlimit must be in block_limit..65536, got {self.bandlimit}")
        if not 0.0 <= self.low_fraction <= 1.0:
            raise ConfigError(f"low fraction must be in [0, 1], got {self.low_fraction}")
        if not 0 <= self.seed < 1 << 63:
            raise ConfigError("seed must be a non-negative 63-bit integer")

    def to_dict(self) -> dict:
        return asdict(self)


def low_block(limit: int) -> list[tuple[int, int]]:
    """Half-plane integer vectors with max(|kx|, |ky|) <= limit, without the fundamentals."""
    pts = [
        (kx, ky)
        for kx in range(0, limit + 1)
        for ky in range(-limit, limit + 1)
        if in_half_plane(kx, ky) and (kx, ky) not in ((1, 0), (0, 1))
    ]
    return pts


def high_grid(bandlimit: int, block_limit: int, needed: int) -> list[tuple[int, int]]:
    """The coarsest regular grid over [-B, B]² whose half-plane points outside the low block number
    at least `needed` (or the densest one, every integer, when none does)."""
    taken: set[tuple[int, int]] = set()
    for a in range(1, bandlimit + 1):
        step = bandlimit / a
        axis = sorted({round(i * step) for i in range(-a, a + 1)})
        taken = set()
        for kx in axis:
            for ky in axis:
                c = canonical(kx, ky)
                if c != (0, 0) and max(abs(c[0]), abs(c[1])) > block_limit:
                    taken.add(c)
        if len(taken) >= needed:
            break
    return sorted(taken)


def sample_frequencies(spec: FrequencySpec) -> np.ndarray:
    """The (m, 2) int64 array of input frequencies: [fundamentals, low block, high grid]."""
    m = spec.count
    rest = m - 2
    block = low_block(spec.block_limit)
    n_low = min(round(spec.low_fraction * rest), len(block))
    n_high = rest - n_low
    grid = high_grid(spec.bandlimit, spec.block_limit, n_high) if n_high else []
    if n_high > len(grid):
        # The grid cannot hold them all: let the low block take the overflow before giving up.
        n_low = min(len(block), rest - len(grid))
        n_high = rest - n_low
        if n_high > len(grid):
            raise ConfigError(
                f"{m} input frequencies do not fit under bandlimit {spec.bandlimit} "
                f"(at most {2 + len(block) + len(grid)})"
            )
    low = block if n_low == len(block) else _keyed_order(block, spec.seed, 1)[:n_low]
    high = grid if n_high == len(grid) else _keyed_order(grid, spec.seed, 2)[:n_high]
    ks = [(1, 0), (0, 1), *sorted(low, key=_ring_then_lex), *sorted(high, key=_ring_then_lex)]
    return np.asarray(ks, dtype=np.int64).reshape(m, 2)


def _ring_then_lex(k: tuple[int, int]) -> tuple[int, int, int]:
    return (max(abs(k[0]), abs(k[1])), k[0], k[1])


def is_low(ks: np.ndarray, block_limit: int) -> np.ndarray:
    """Columns that get the low bound c_L: max(|kx|, |ky|) <= L (the fundamentals included)."""
    return np.abs(ks).max(axis=1) <= block_limit


def cycles_to_k(cycles: float, period: float) -> int:
    """Bandlimits are stated in cycles across the image's longer side: k = cycles · p / 2."""
    return max(1, int(math.floor(cycles * period / 2 + 0.5)))
