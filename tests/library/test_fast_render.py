"""The fast CPU renderer must stay faithful to direct evaluation of the network (≥ 45 dB), whatever the
size, crop, aspect ratio and colour, and must leave networks it does not understand to `render.render`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tuner_model.core.colour import forward
from tuner_model.core.coords import Crop
from tuner_model.core.metrics import psnr
from tuner_model.models import ModelConfig, build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.rate.plan import default_config
from tuner_model.render import fast as fr
from tuner_model.render import resample, separable, sines
from tuner_model.render.direct import render
from tuner_model.render.fitted import render_image
from tuner_model.train.fit import FitOptions, fit

FAITHFUL_DB = 45.0


def _fitted(image: np.ndarray, colour: str, steps: int = 60, **overrides) -> tuple[torch.nn.Module, tuple]:
    h, w, c = image.shape
    cfg = default_config(w, h, c)
    if overrides:
        cfg = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    model = build_model(cfg, seed=1)
    fit(model, forward(image, colour), FitOptions(steps=steps, lr=3e-3, device="cpu", seed=1))
    return model, (w, h)


@pytest.fixture(scope="module")
def rgb_net(parrots):
    return _fitted(parrots, "rgb")


@pytest.fixture(scope="module")
def ycc_net(parrots):
    return _fitted(parrots, "ycbcr")


@pytest.fixture(scope="module")
def gray_net(parrots):
    gray = (parrots @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    return _fitted(gray, "gray")


@pytest.fixture
def resample_calls(monkeypatch):
    """Records each render that really took the resampling path (so a test cannot pass by never taking
    it); the probe's own small resamplings do not count."""
    calls = []
    real = fr.resampled

    def spy(*args, **kwargs):
        v = real(*args, **kwargs)
        if v is not None:
            calls.append(v.shape)
        return v

    monkeypatch.setattr(fr, "resampled", spy)
    return calls


CASES = [
    (None, None, Crop(0, 0, 1, 1)),  # native
    (40, 27, Crop(0, 0, 1, 1)),  # downscale
    (37, 101, Crop(0, 0, 1, 1)),  # anisotropic: down in x, up in y
    (400, 250, Crop(0, 0, 1, 1)),  # upscale, non-uniform aspect
    (333, 222, Crop(0.1, 0.2, 0.6, 0.9)),  # upscaled crop
    (64, 48, Crop(0.5, 0.0, 1.0, 0.5)),  # crop near native density
]


# Every geometry for RGB; the colour transforms on the geometries that exercise both paths.
PARAMS = [("rgb_net", *c) for c in CASES] + [(n, *CASES[i]) for n in ("ycc_net", "gray_net") for i in (0, 2, 4)]


@pytest.mark.parametrize(("net", "width", "height", "crop"), PARAMS)
def test_fast_render_is_faithful(request, net, width, height, crop):
    model, native = request.getfixturevalue(net)
    colour = {"rgb_net": "rgb", "ycc_net": "ycbcr", "gray_net": "gray"}[net]
    ref = render(model, native, width, height, crop, colour)
    got = fr.render_fast(model, native, width, height, crop, colour)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert got.min() >= 0.0 and got.max() <= 1.0
    assert psnr(got, ref) >= FAITHFUL_DB
    exact = fr.render_fast(model, native, width, height, crop, colour, resample=False)
    assert psnr(exact, ref) >= 80.0  # the separable sum is the same function, only reordered


def test_large_upscale_resamples_and_stays_faithful(rgb_net, resample_calls):
    model, native = rgb_net
    ref = render(model, native, 600, 400)
    got = fr.render_fast(model, native, 600, 400)
    assert resample_calls, "a 6x upscale should take the resampling path"
    assert psnr(got, ref) >= FAITHFUL_DB


def test_native_render_is_exact(rgb_net, resample_calls):
    model, native = rgb_net
    got = fr.render_fast(model, native)
    assert not resample_calls
    assert psnr(got, render(model, native)) >= 80.0


def test_network_that_fails_the_probe_is_evaluated_exactly(resample_calls):
    """Weights pushed to their bounds carry far more harmonic energy than a fitted image: the probe must
    notice and the render must still be faithful."""
    cfg = default_config(48, 32, 3)
    model = build_model(cfg, seed=3)
    with torch.no_grad():
        v = model.hidden[0]
        v.copy_(torch.sign(torch.randn_like(v)) * model.weight_bound(0) / cfg.hidden_omega)
        model.out.weight.mul_(5)
    h = resample.eval_spacing(model)
    assert resample.probe_psnr(model, (48, 32), "rgb", h) < resample.PROBE_DB
    ref = render(model, (48, 32), 300, 200)
    got = fr.render_fast(model, (48, 32), 300, 200)
    assert not resample_calls
    assert psnr(got, ref) >= FAITHFUL_DB


def test_probe_is_recomputed_when_weights_change(rgb_net):
    model, native = rgb_net
    model = build_model(model.config, seed=0)
    model.load_state_dict(rgb_net[0].state_dict())
    h = resample.eval_spacing(model)
    assert resample.passes_probe(model, native, "rgb", h)
    with torch.no_grad():
        v = model.hidden[0]
        v.copy_(torch.sign(torch.randn_like(v)) * model.weight_bound(0) / model.config.hidden_omega)
        model.out.weight.mul_(5)
    assert not resample.passes_probe(model, native, "rgb", h)


def test_deeper_tuner_network(parrots):
    cfg = ModelConfig(arch="tuner", channels=3, input_width=24, hidden=(16, 12), bandlimit=20, block_limit=5)
    model = build_model(cfg, seed=0)
    for size in ((96, 64), (250, 170)):
        ref = render(model, (96, 64), *size)
        assert psnr(fr.render_fast(model, (96, 64), *size), ref) >= FAITHFUL_DB


def test_frequencies_without_kx_zero_keep_the_bias():
    """With no kx = 0 column the bias cannot ride on cos(0·x): it must still be added."""
    cfg = ModelConfig(arch="tuner", channels=1, input_width=2, hidden=(8,), bandlimit=10, block_limit=10)
    model = build_model(cfg, seed=0)
    with torch.no_grad():
        model.k.copy_(torch.tensor([[1, 0], [2, 1]]))  # neither has kx = 0
        model.omega.copy_(model.k.float() * (2 * torch.pi / cfg.period))
        model.hidden_bias[0].fill_(0.02)
    ref = render(model, (30, 20), colour="gray")
    assert psnr(fr.render_fast(model, (30, 20), colour="gray", resample=False), ref) >= 80.0
    assert psnr(fr.render_fast(model, (30, 20), colour="gray"), ref) >= FAITHFUL_DB


@pytest.mark.parametrize("arch", ["siren", "ffm"])
def test_other_architectures_fall_back_to_direct_evaluation(arch, monkeypatch):
    model = build_model(ModelConfig(arch=arch, channels=3, input_width=16, hidden=(16,)), seed=0)

    def forbidden(*args, **kwargs):
        raise AssertionError("the separable path must not run for " + arch)

    for module in (fr, resample):  # exact grids and the resampler's lattice
        monkeypatch.setattr(module, "grid_values", forbidden)
    ref = render(model, (40, 30), 90, 50, Crop(0.1, 0.1, 0.9, 0.8))
    got = fr.render_fast(model, (40, 30), 90, 50, Crop(0.1, 0.1, 0.9, 0.8))
    np.testing.assert_array_equal(got, ref)


def test_render_image_uses_the_fast_path(rgb_net, monkeypatch):
    model, (w, h) = rgb_net
    calls = []
    real = fr.grid_values
    for module in (fr, resample):  # exact grids and the resampler's lattice
        monkeypatch.setattr(module, "grid_values", lambda *a, **k: calls.append(1) or real(*a, **k))
    fitted = FittedImage(model.config, w, h, model, "rgb")
    got = render_image(fitted, 200, 100)
    assert calls
    assert psnr(got, render(model, (w, h), 200, 100)) >= FAITHFUL_DB


def test_compiled_sine_matches_torch_sin():
    z = torch.linspace(-300, 300, 100_001)
    assert float((sines.poly_sin(z) - torch.sin(z)).abs().max()) < 1e-4


def test_compiled_render_matches_eager(rgb_net):
    """What the API runs after warm_up(): the compiled in-place sine, on tiles of every size (the last tile
    of a render is shorter), gives the eager renderer's pixels."""
    model, native = rgb_net
    eager = [fr.render_fast(model, native), fr.render_fast(model, native, 333, 97)]
    try:
        if not sines.warm_up(True):
            pytest.skip("torch.compile is unavailable here (no C++ compiler)")
        compiled = [fr.render_fast(model, native), fr.render_fast(model, native, 333, 97)]
    finally:
        sines.warm_up(False)
    for a, b in zip(eager, compiled, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_tiles_of_a_resampled_render_line_up(rgb_net, resample_calls):
    """The resampling lattice is anchored to the image, not to the crop: a tile is the same pixels as
    the region of the full render (no seams when a client assembles tiles)."""
    model, native = rgb_net
    full = fr.render_fast(model, native, 480, 320)
    tile = fr.render_fast(model, native, 240, 160, Crop(0.5, 0.5, 1.0, 1.0))
    tile2 = fr.render_fast(model, native, 120, 80, Crop(0.25, 0.0, 0.5, 0.25))
    assert len(resample_calls) == 3
    np.testing.assert_allclose(tile, full[160:, 240:], atol=1e-5)
    np.testing.assert_allclose(tile2, full[:80, 120:240], atol=1e-5)


@pytest.mark.parametrize("nx", [96, 97, 8])
def test_mirror_symmetric_grids_take_the_half_width_path_exactly(rgb_net, monkeypatch, nx):
    """A full-width grid is its own mirror image: the renderer evaluates half the columns with the cosine
    and sine rows apart (C + S at x, C − S at −x). Same sums, so it matches the general path to float
    rounding, for even and odd widths and for a deeper network."""
    deep = build_model(ModelConfig.from_dict({**rgb_net[0].config.to_dict(), "hidden": [24, 16],
                                              "input_width": 40, "block_limit": 3}), seed=3).eval()
    xs = torch.linspace(-1, 1, nx + 2, dtype=torch.float64)[1:-1]
    ys = torch.linspace(-0.6, 0.7, 13, dtype=torch.float64)
    for model in (rgb_net[0], deep):
        assert separable.is_symmetric(xs)
        taken = []
        real_fold = separable.fold_impl
        monkeypatch.setattr(separable, "fold_impl",
                            lambda taken=taken, real_fold=real_fold: taken.append(1) or real_fold())
        half = separable.grid_values(model, xs, ys)
        assert taken
        monkeypatch.setattr(separable, "is_symmetric", lambda _xs: False)
        whole = separable.grid_values(model, xs, ys)
        monkeypatch.undo()
        np.testing.assert_allclose(half.numpy(), whole.numpy(), atol=2e-5)
    assert not separable.is_symmetric(xs[1:])  # a crop's grid is not: the general path
