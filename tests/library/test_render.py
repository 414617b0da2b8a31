"""Rendering at any size: native reproduces the fit, one side keeps the aspect, crops line up."""

import numpy as np
import pytest

from tuner_model.core.coords import Crop
from tuner_model.core.errors import ConfigError
from tuner_model.core.geometry import output_size
from tuner_model.core.metrics import psnr
from tuner_model.models import ModelConfig
from tuner_model.render.fitted import render_image
from tuner_model.train.fit import FitOptions, fit_image


@pytest.fixture(scope="module")
def fitted(parrots):
    cfg = ModelConfig(input_width=48, hidden=(48,), bandlimit=32)
    return fit_image(parrots, cfg, FitOptions(steps=150, lr=2e-3, device="cpu"))


def test_native_render_reproduces_the_fit(fitted, parrots):
    out = render_image(fitted)
    assert out.shape == parrots.shape
    assert out.min() >= 0 and out.max() <= 1
    assert abs(psnr(out, parrots) - fitted.meta["psnr"]) < 1e-3
    assert fitted.meta["psnr"] > 22


def test_one_side_keeps_the_aspect_ratio(fitted):
    assert render_image(fitted, width=192).shape == (128, 192, 3)
    assert render_image(fitted, height=32).shape == (32, 48, 3)
    assert render_image(fitted, width=50, height=50).shape == (50, 50, 3)


def test_upscale_is_smooth_and_consistent_with_native(fitted):
    big = render_image(fitted, width=192)
    # Averaging 2×2 blocks of a 2× render lands near the native render (same continuous image).
    pooled = big.reshape(64, 2, 96, 2, 3).mean(axis=(1, 3))
    assert psnr(pooled, render_image(fitted)) > 30


def test_crop_is_the_same_pixels_as_a_region_of_a_larger_render(fitted):
    full = render_image(fitted, width=192, height=128)
    quad = render_image(fitted, width=96, height=64, crop=Crop(0.0, 0.0, 0.5, 0.5))
    np.testing.assert_allclose(quad, full[:64, :96], atol=1e-5)
    # A crop with no size given renders the region at native density.
    assert render_image(fitted, crop=Crop(0.25, 0.5, 0.75, 1.0)).shape == (32, 48, 3)


@pytest.mark.parametrize("w,h", [(0, None), (-3, 10), (None, 0)])
def test_bad_sizes_are_errors(w, h):
    with pytest.raises(ConfigError):
        output_size((96, 64), w, h)


def test_bad_crop_is_an_error():
    with pytest.raises(ConfigError):
        Crop(0.5, 0, 0.4, 1)


def test_grayscale_roundtrip():
    rng = np.random.default_rng(0)
    img = np.clip(np.linspace(0, 1, 40)[None, :, None] + 0.05 * rng.random((30, 40, 1)), 0, 1).astype(np.float32)
    f = fit_image(img, ModelConfig(channels=1, input_width=16, hidden=(16,), bandlimit=16), FitOptions(steps=40,
                  device="cpu"), colour="gray")
    out = render_image(f, width=80)
    assert out.shape == (60, 80, 1)


def test_ycbcr_colour_space_renders_rgb(parrots):
    f = fit_image(parrots, ModelConfig(input_width=32, hidden=(32,), bandlimit=32), FitOptions(steps=100, lr=2e-3,
                  device="cpu"), colour="ycbcr")
    assert abs(psnr(render_image(f), parrots) - f.meta["psnr"]) < 1e-3
    assert f.meta["psnr"] > 18
