"""The latent-grid model: interpolation, the native fast path, the blob and its hostile-input bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tuner_model.codec.latent_blob import (
    MAX_PIXELS_PER_BYTE,
    decode_latent_blob,
    encode_latent_blob,
    network_shapes,
    read_latent_info,
    snap_network,
)
from tuner_model.core import cubic
from tuner_model.core.coords import Crop
from tuner_model.core.errors import BlobError
from tuner_model.models.latent import LatentConfig, LatentTunerNet, grid_shapes, macs_per_pixel


def _random_model(width: int = 37, height: int = 23, seed: int = 0, neighbours: int = 4) -> LatentTunerNet:
    g = torch.Generator().manual_seed(seed)
    model = LatentTunerNet(LatentConfig(levels=4, neighbours=neighbours), width, height, g)
    with torch.no_grad():
        for grid in model.latents:
            grid.copy_(torch.round(torch.randn(grid.shape, generator=g) * 3))
    return model


def _context(model: LatentTunerNet, seed: int = 1) -> dict[str, np.ndarray]:
    from tuner_model.models.latent_context import ContextModel

    ctx = ContextModel(model.config.levels)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ctx.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return ctx.state_integers()


def test_cubic_interpolates_its_samples_and_reproduces_a_linear_ramp() -> None:
    grid = torch.randn(9, 13)
    rows = cubic.taps(torch.arange(9, dtype=torch.float64), 9)
    cols = cubic.taps(torch.arange(13, dtype=torch.float64), 13)
    assert torch.allclose(cubic.sample(grid, rows, cols), grid, atol=1e-6)
    ramp = torch.arange(13, dtype=torch.float32).expand(9, 13)
    t = torch.linspace(1.0, 11.0, 57, dtype=torch.float64)  # away from the clamped border
    out = cubic.sample(ramp, rows, cubic.taps(t, 13))
    assert torch.allclose(out, t.to(torch.float32).expand(9, 57), atol=1e-5)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_polyphase_upsample_equals_the_gathered_cubic(factor: int) -> None:
    height, width = 29, 45  # not multiples of the factor: the last cells overhang the image
    grid = torch.randn(-(-height // factor), -(-width // factor), requires_grad=True)
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) / factor - 0.5
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) / factor - 0.5
    gathered = cubic.sample(grid, cubic.taps(ys, grid.shape[0]), cubic.taps(xs, grid.shape[1]))
    fast = cubic.upsample(grid, factor, height, width)
    assert torch.allclose(fast, gathered, atol=1e-5)
    (g1,) = torch.autograd.grad((fast * gathered.detach()).sum(), grid)
    (g2,) = torch.autograd.grad((gathered * gathered.detach()).sum(), grid)
    assert torch.allclose(g1, g2, atol=1e-4)


@pytest.mark.parametrize("neighbours", [0, 4])
def test_native_render_equals_the_general_path_and_a_crop_equals_a_region(neighbours: int) -> None:
    model = _random_model(neighbours=neighbours)
    with torch.no_grad():
        native = model.forward_native(list(model.latents), model.native_basis())
        general = model.forward_grid(list(model.latents), model.axes(37, 23))
        assert torch.allclose(native, general, atol=1e-5)
        big = model.forward_grid(list(model.latents), model.axes(74, 46)).reshape(46, 74, -1)
        crop = model.forward_grid(list(model.latents), model.axes(37, 23, Crop(0.5, 0.5, 1.0, 1.0)))
        assert torch.allclose(crop.reshape(23, 37, -1), big[23:, 37:], atol=1e-5)


def test_cost_per_pixel_is_counted_and_within_budget() -> None:
    for config in (LatentConfig(), LatentConfig(neighbours=4), LatentConfig(hidden=(24, 24), neighbours=4)):
        m, lv, nb = config.input_width, config.levels, config.neighbours
        widths = (m + lv + nb, *config.hidden)
        layers = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=False))
        assert macs_per_pixel(config) == 8 * (lv + nb) + 2 * m + layers + 3 * config.hidden[-1]
        assert macs_per_pixel(config) <= 3000


def test_blob_round_trip_is_exact() -> None:
    model = _random_model()
    steps = {name: 8 for name in network_shapes(model.config)}
    snap_network(model, steps)
    blob = encode_latent_blob(model, _context(model), steps, psnr=31.5)
    decoded, info = decode_latent_blob(blob)
    assert (info.width, info.height) == (37, 23)
    assert math.isclose(info.psnr, 31.5, rel_tol=1e-6)
    assert info.latents == sum(h * w for h, w in grid_shapes(37, 23, 4))
    for (name, a), (_, b) in zip(model.state_dict().items(), decoded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert read_latent_info(blob).bytes == len(blob)


def test_hostile_blobs_are_refused_before_any_allocation() -> None:
    model = _random_model()
    steps = {name: 8 for name in network_shapes(model.config)}
    snap_network(model, steps)
    blob = bytearray(encode_latent_blob(model, _context(model), steps))
    for i in range(5, len(blob) - 4, max(1, len(blob) // 40)):
        bad = bytearray(blob)
        bad[i] ^= 0x5A
        with pytest.raises(BlobError):
            decode_latent_blob(bytes(bad))  # the CRC catches it first
    with pytest.raises(BlobError):
        decode_latent_blob(bytes(blob[:-9]))
    # A well-formed container whose header declares far more pixels than its bytes can carry.
    from tuner_model.codec.bitio import Writer
    from tuner_model.codec.container import pack

    w = Writer()
    w.u8(1)
    w.varint(30000)
    w.varint(30000)
    tiny = pack(w.getvalue() + bytes(40), 3)
    assert MAX_PIXELS_PER_BYTE * len(tiny) < 30000 * 30000
    with pytest.raises(BlobError, match="too many"):
        read_latent_info(tiny)


def test_a_short_fit_learns_and_codes_an_image() -> None:
    from tuner_model.rate.latent_encode import encode_latent, preset

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:48]
    image = np.stack([128 + 100 * np.sin(xx / 5), 128 + 100 * np.cos(yy / 7), 64 + 0 * xx], -1)
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    result = encode_latent(image, lam=1e-3, config=LatentConfig(levels=4), phases=preset(120))
    assert result.psnr > 24.0  # a flat grey guess is ~13 dB on this image
    decoded, info = decode_latent_blob(result.blob)
    assert info.psnr == pytest.approx(result.psnr, abs=1e-3)
    assert result.bpp == pytest.approx(8 * len(result.blob) / (32 * 48))
    # The header's PSNR is what decoding gives (the encoder measures it on the snapped model, not a decode).
    from tuner_model.render.latent import render_latent

    pixels = np.round(render_latent(decoded) * 255) / 255
    measured = 10 * math.log10(1 / float(np.mean((pixels - image / 255.0) ** 2)))
    assert measured == pytest.approx(result.psnr, abs=1e-3)


def _reseal_v3(body: bytes) -> bytes:
    import struct
    import zlib

    from tuner_model.codec.container import MAGIC

    data = MAGIC + b"\x03" + body
    return data + struct.pack("<I", zlib.crc32(data))


def _must_fail_cleanly(data: bytes) -> None:
    import contextlib

    for fn in (read_latent_info, decode_latent_blob):
        with contextlib.suppress(BlobError):  # decoding cleanly is fine too; anything else fails the test
            fn(data)


def _valid_body() -> bytes:
    model = _random_model(19, 11)
    steps = {name: 6 for name in network_shapes(model.config)}
    snap_network(model, steps)
    return encode_latent_blob(model, _context(model), steps)[5:-4]


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FUZZ = settings(max_examples=120, deadline=3000, suppress_health_check=[HealthCheck.too_slow])
_BODY = _valid_body()


@_FUZZ
@given(st.binary(max_size=300))
def test_fuzz_resealed_random_bodies(body: bytes) -> None:
    _must_fail_cleanly(_reseal_v3(body))


@_FUZZ
@given(st.lists(st.tuples(st.integers(0, len(_BODY) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, len(_BODY)))
def test_fuzz_mutated_valid_bodies_behind_a_valid_checksum(edits: list[tuple[int, int]], cut: int) -> None:
    body = bytearray(_BODY)
    for pos, val in edits:
        body[pos] = val
    _must_fail_cleanly(_reseal_v3(bytes(body)))
    _must_fail_cleanly(_reseal_v3(bytes(body[:cut])))


def test_render_in_bands_equals_one_evaluation_and_scales_to_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuner_model.render import latent as render_mod

    model = _random_model()
    whole = render_mod.render_latent(model, 74, 46)
    monkeypatch.setattr(render_mod, "BAND_PIXELS", 100)  # one row per band
    banded = render_mod.render_latent(model, 74, 46)
    assert np.allclose(whole, banded, atol=1e-6)  # BLAS may sum a band in another order
    with torch.no_grad():
        direct = model.forward_grid(list(model.latents), model.axes(74, 46)).clamp(0, 1)
    assert np.allclose(whole, direct.reshape(46, 74, 3).numpy(), atol=1e-6)
    assert render_mod.render_latent(model, width=20).shape == (12, 20, 3)  # aspect kept: 23/37 × 20 ≈ 12
