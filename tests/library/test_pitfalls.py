"""Each testable pitfall of the official TUNER code (TUNER.md §8) has a test that would catch it."""

import math

import numpy as np
import pytest
import torch

from tuner_model.models import ModelConfig, build_model
from tuner_model.render.fitted import render_image
from tuner_model.train.fit import FitOptions, fit


def _tuner(**kw) -> torch.nn.Module:
    base = dict(arch="tuner", input_width=64, hidden=(32,), bandlimit=40, block_limit=4)
    base.update(kw)
    return build_model(ModelConfig(**base), seed=0)


def test_8_1_column_class_uses_integer_k_and_abs_max():
    """construct_bound multiplied by (p/2)π and took a signed max: columns like (2, 3) got c_H and
    (-85, -73) got c_L. Here k is recovered from ω as round(ω·p/2π) and classed by max(|kx|, |ky|)."""
    for period in (4.0, 3.0, 2.1):
        m = _tuner(period=period, bound_low=1.0, bound_high=0.6)
        k = torch.round(m.omega * m.config.period / (2 * math.pi)).long()
        assert torch.equal(k, m.k)
        expect = torch.where(k.abs().max(dim=1).values <= 4, 1.0, 0.6)
        assert torch.equal(m.column_bound, expect)
        # Inside the block but with a component >= 2 → still c_L; negative components count by |.|.
        assert (m.column_bound[(k.abs().max(dim=1).values <= 4) & (k.max(dim=1).values >= 2)] == 1.0).all()
        assert (m.column_bound[k.min(dim=1).values < -4] == 0.6).all()


def test_8_2_no_duplicate_or_opposite_frequencies():
    k = _tuner(input_width=128).k.tolist()
    assert len({tuple(v) for v in k}) == len(k)
    assert not any((-a, -b) in {tuple(v) for v in k} for a, b in k)
    assert [0, 0] not in k


def test_8_3_output_layer_is_never_clamped():
    m = _tuner()
    with torch.no_grad():
        m.out.weight.fill_(5.0)
    m.project()
    assert torch.all(m.out.weight == 5.0)


def test_8_4_clamp_is_per_column_not_per_layer():
    m = _tuner(bound_low=1.0, bound_high=0.3)
    with torch.no_grad():
        m.hidden[0].fill_(10.0)
    m.project()
    W = m.effective_weight(0)
    assert torch.allclose(W, m.column_bound.expand_as(W))
    assert torch.unique(m.column_bound).tolist() == pytest.approx([0.3, 1.0])


def test_8_5_learned_bounds_really_shape_the_output_and_learn():
    m = _tuner(learn_bounds=True)
    x = torch.rand(50, 2) * 2 - 1
    y0 = m(x).detach()
    with torch.no_grad():
        m.bounds[0].mul_(0.5)
    assert not torch.allclose(m(x), y0)  # c is used in the forward pass, not dead code
    image = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    c0 = m.bounds[0].detach().clone()
    fit(m, image, FitOptions(steps=5, device="cpu"))
    assert not torch.equal(m.bounds[0].detach(), c0)
    assert m.penalty() is not None and float(m.penalty().detach()) > 0
    assert (m.effective_weight(0).abs() <= m.bounds[0].abs() + 1e-6).all()


def test_8_6_ffm_frequencies_are_a_registered_buffer():
    m = build_model(ModelConfig(arch="ffm", input_width=16, hidden=(8,)), seed=0)
    assert "B" in m.state_dict()
    assert m.double().B.dtype == torch.float64  # moves with the module, no .cuda() inside forward


def test_8_7_deep_networks_bound_every_hidden_layer():
    m = _tuner(hidden=(16, 16), bound_deep=0.2)
    with torch.no_grad():
        for v in m.hidden:
            v.fill_(10.0)
    m.project()
    assert torch.allclose(m.effective_weight(1).abs(), torch.full((16, 16), 0.2))
    assert torch.allclose(m.effective_weight(0), m.column_bound.expand(16, -1))


def test_8_9_phases_are_trainable_and_frequencies_frozen():
    m = _tuner()
    names = {n for n, _ in m.named_parameters()}
    assert "phase" in names and "omega" not in names and "k" not in names
    assert m.phase.abs().max() <= math.pi / 2
    omega = m.omega.clone()
    image = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    phase0 = m.phase.detach().clone()
    fit(m, image, FitOptions(steps=5, device="cpu"))
    assert torch.equal(m.omega, omega)
    assert not torch.equal(m.phase.detach(), phase0)


def test_8_10_non_square_pixels_are_not_misaligned():
    """The official test-PSNR helper flattened H×W in the square grid's order; a non-square image
    must map row r, column c to its own pixel. A network fitted to a horizontal ramp must render a
    horizontal ramp, and so for a vertical one."""
    h, w = 6, 14
    ramp = np.broadcast_to(np.linspace(0, 1, w, dtype=np.float32)[None, :, None], (h, w, 1)).copy()
    from tuner_model.train.fit import fit_image

    cfg = ModelConfig(arch="tuner", channels=1, input_width=16, hidden=(16,), bandlimit=8, block_limit=3)
    for img in (ramp, np.ascontiguousarray(np.transpose(ramp, (1, 0, 2)))):
        f = fit_image(img, cfg, FitOptions(steps=300, lr=3e-3, device="cpu"), colour="gray")
        out = render_image(f)
        assert out.shape == img.shape
        assert f.meta["psnr"] > 25
