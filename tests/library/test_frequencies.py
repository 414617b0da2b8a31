"""Spectral sampling (TUNER.md §2.2) and the official code's sampling pitfalls (§8.2, §8.8)."""

import numpy as np
import pytest

from tuner_model.core.errors import ConfigError
from tuner_model.core.frequencies import FrequencySpec, cycles_to_k, is_low, low_block, sample_frequencies


@pytest.mark.parametrize("m,bandlimit,block", [(416, 85, 10), (256, 85, 10), (64, 32, 4), (2, 10, 3), (192, 128, 10)])
def test_unique_half_plane_with_fundamentals(m, bandlimit, block):
    ks = sample_frequencies(FrequencySpec(m, bandlimit, block, 0.7, seed=3))
    assert ks.shape == (m, 2)
    assert ks.dtype == np.int64
    # Fundamentals first, always.
    assert tuple(ks[0]) == (1, 0) and tuple(ks[1]) == (0, 1)
    pts = [tuple(k) for k in ks]
    assert len(set(pts)) == m, "duplicate frequencies (the official code samples with replacement)"
    assert (0, 0) not in pts
    # Half plane only: ±k are the same neuron up to sign, so never both.
    assert all(kx > 0 or (kx == 0 and ky > 0) for kx, ky in pts)
    assert np.abs(ks).max() <= bandlimit


def test_low_block_then_sparse_high_grid():
    spec = FrequencySpec(416, 85, 10, 0.7, seed=0)
    ks = sample_frequencies(spec)
    low = is_low(ks, 10)
    n_low = round(0.7 * 414)
    # The block (220 vectors for L = 10) is smaller than ρ·(m−2) = 290: all of it is taken, the rest
    # overflows to the high grid.
    assert len(low_block(10)) == 218  # 220 half-plane vectors minus the two fundamentals
    assert low.sum() == 2 + 218
    assert (~low).sum() == 414 - 218
    assert n_low > 218
    high = ks[~low]
    assert np.abs(high).max(axis=1).min() > 10
    # A sparse grid: it reaches out near the bandlimit.
    assert np.abs(high).max() >= 70


def test_subset_of_block_when_block_is_larger():
    ks = sample_frequencies(FrequencySpec(64, 32, 10, 0.7, seed=1))
    low = is_low(ks, 10)
    assert low.sum() - 2 == round(0.7 * 62)


def test_deterministic_from_seed_and_seed_matters():
    a = sample_frequencies(FrequencySpec(128, 64, 10, 0.7, seed=5))
    b = sample_frequencies(FrequencySpec(128, 64, 10, 0.7, seed=5))
    c = sample_frequencies(FrequencySpec(128, 64, 10, 0.7, seed=6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_frozen_frequency_set_is_pinned():
    """Blobs store only the seed and parameters, so this exact set is part of the file format:
    if this test fails, every stored blob would decode to a different network."""
    ks = sample_frequencies(FrequencySpec(24, 20, 3, 0.7, seed=42))
    assert ks.tolist() == [
        [1, 0], [0, 1], [1, 1], [0, 2], [1, -2], [2, -1], [2, 1], [2, 2], [0, 3], [1, 3], [2, -3], [3, -3],
        [3, -2], [3, -1], [3, 0], [3, 2], [3, 3], [10, -10], [10, 0], [10, -20], [10, 20], [20, -20], [20, 10],
        [20, 20],
    ]


def test_block_limit_above_bandlimit_is_an_error_not_a_silent_reset():
    # Official code silently resets L to 12 when L >= bandlimit (TUNER.md §8.8).
    with pytest.raises(ConfigError):
        FrequencySpec(64, 8, 10)


def test_too_many_frequencies_for_the_band_is_an_error():
    with pytest.raises(ConfigError):
        sample_frequencies(FrequencySpec(4000, 12, 10))


def test_cycles_to_k():
    assert cycles_to_k(10, 4.0) == 20
    assert cycles_to_k(10, 2.0) == 10
