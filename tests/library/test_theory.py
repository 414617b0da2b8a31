"""TUNER's theory as tests (TUNER.md §5): the spectrum lies on the lattice of the period, harmonic
amplitudes obey Theorem 2, the bounds hold after every step, and a seed makes a fit reproducible."""

import math

import numpy as np
import pytest
import torch

from tuner_model.core.stop import stop_when
from tuner_model.models import ModelConfig, build_model
from tuner_model.train.fit import FitOptions, fit


def _grid(n: int, span: float) -> torch.Tensor:
    """n×n points spaced span/n over [-span/2, span/2) in x and y, row-major (y, x)."""
    t = torch.arange(n, dtype=torch.float64) * (span / n) - span / 2
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack((gx.reshape(-1), gy.reshape(-1)), 1)


def _small_tuner(period: float = 4.0, **kw) -> torch.nn.Module:
    cfg = ModelConfig(arch="tuner", channels=1, input_width=kw.pop("m", 12), hidden=(kw.pop("n", 10),),
                      period=period, bandlimit=kw.pop("bandlimit", 6), block_limit=kw.pop("block_limit", 2), **kw)
    model = build_model(cfg, seed=1).double()
    # ω in float64 from the integers, so that the lattice is exact to double precision in these checks.
    model.omega = (2 * math.pi / period) * model.k.double()
    return model


@pytest.mark.parametrize("period", [4.0, 2.1])
def test_spectrum_lies_on_the_integer_lattice_of_the_period(period):
    """Sampled over two periods, a p-periodic function has no energy at half-integer lattice points
    (odd FFT bins): every frequency is an integer combination of the (2π/p)·k inputs (Theorem 1)."""
    model = _small_tuner(period)
    n = 64
    with torch.no_grad():
        f = model(_grid(2 * n, 2 * period))[:, 0].reshape(2 * n, 2 * n).numpy()
    spec = np.abs(np.fft.fft2(f)) / f.size
    odd = np.ones_like(spec, dtype=bool)
    odd[::2, ::2] = False
    assert spec[~odd].max() > 1e-3  # there is a spectrum
    assert spec[odd].max() < 1e-9 * spec[~odd].max()


def test_control_siren_is_not_on_a_lattice():
    """The same check fails for SIREN, whose first layer is not on a lattice: the test can fail."""
    cfg = ModelConfig(arch="siren", channels=1, input_width=12, hidden=(10,), first_omega=3.0)
    model = build_model(cfg, seed=1).double()
    n, period = 64, 4.0
    with torch.no_grad():
        f = model(_grid(2 * n, 2 * period))[:, 0].reshape(2 * n, 2 * n).numpy()
    spec = np.abs(np.fft.fft2(f)) / f.size
    odd = np.ones_like(spec, dtype=bool)
    odd[::2, ::2] = False
    assert spec[odd].max() > 1e-4 * spec[~odd].max()


def _theorem2_bound(w: np.ndarray, k: np.ndarray) -> float:
    return float(np.prod([(abs(wj) / 2) ** abs(kj) / math.factorial(abs(kj)) for wj, kj in zip(w, k, strict=True)]))


@pytest.mark.parametrize("scale", [0.3, 1.0, 1.9])
def test_harmonic_amplitudes_obey_theorem_2(scale):
    """With only the fundamentals as inputs, lattice point k ↔ one term of the expansion, so the
    Fourier coefficient of a hidden neuron at k is bounded by Π_j (|W_ij|/2)^|k_j| / |k_j|!."""
    model = _small_tuner(m=2, n=6, bandlimit=2, block_limit=1)
    with torch.no_grad():
        # Effective weights |W| = ω_h·|V| up to `scale` (beyond the default bounds, to test the theorem itself).
        model.hidden[0].mul_(scale / (model.config.hidden_omega * model.hidden[0].abs().max()))
    period, n = 4.0, 48
    x = _grid(n, period)
    with torch.no_grad():
        y = model.features(x)
        hidden = torch.sin(y @ model.effective_weight(0).T + model.config.hidden_omega * model.hidden_bias[0])
    W = model.effective_weight(0).detach().numpy()
    checked = 0
    for i in range(hidden.shape[1]):
        coef = np.fft.fft2(hidden[:, i].reshape(n, n).numpy()) / (n * n)
        for ky in range(-5, 6):
            for kx in range(-5, 6):
                if kx == 0 and ky == 0:
                    continue
                amp = abs(coef[ky % n, kx % n])  # complex exponential coefficient
                assert amp <= _theorem2_bound(W[i], np.array([kx, ky])) + 1e-12, (i, kx, ky)
                checked += 1
    assert checked == 6 * 120
    # The bound is not vacuous: for the first harmonic of small weights, J1(a) ≈ a/2 nearly attains it
    # (up to how the ±k terms' phases combine), for some neuron.
    ratios = []
    for i in range(hidden.shape[1]):
        coef = np.fft.fft2(hidden[:, i].reshape(n, n).numpy()) / (n * n)
        ratios.append(abs(coef[0, 1]) / _theorem2_bound(W[i], np.array([1, 0])))
    assert max(ratios) > (0.5 if scale < 0.5 else 0.05)


@pytest.mark.parametrize("path", ["grid", "dense"])
def test_bounds_hold_after_every_step_and_are_active(path):
    cfg = ModelConfig(arch="tuner", input_width=24, hidden=(16,), bandlimit=20, block_limit=3,
                      bound_low=0.5, bound_high=0.2)
    model = build_model(cfg, seed=0)
    image = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    worst = []

    def check() -> bool:  # polled before every step, i.e. after the previous step's projection
        W = model.effective_weight(0).detach().abs()
        worst.append(float((W - model.column_bound).max()))
        return False

    with stop_when(lambda: "stop" if check() else None):
        fit(model, image, FitOptions(steps=60, lr=0.05, device="cpu", warmup=1, path=path))
    assert len(worst) == 60
    assert max(worst) <= 1e-6
    W = model.effective_weight(0).detach().abs()
    # With this learning rate the clamp really bites: some columns sit on their bound.
    assert (model.column_bound - 1e-6 <= W).any()


@pytest.mark.parametrize("batches", [{"batch_pixels": 64}, {"batch_rows": 4, "batch_cols": 6}],
                         ids=["dense-pixel-batches", "grid-sub-grids"])
def test_same_seed_same_weights_other_seed_other_weights(batches):
    cfg = ModelConfig(arch="tuner", input_width=16, hidden=(16,), bandlimit=12, block_limit=3)
    image = np.random.default_rng(1).random((12, 10, 3)).astype(np.float32)

    def run(seed: int) -> dict:
        m = build_model(cfg, seed=seed)
        fit(m, image, FitOptions(steps=15, device="cpu", seed=seed, **batches))
        return m.state_dict()

    a, b, c = run(3), run(3), run(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
