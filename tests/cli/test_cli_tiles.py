"""Issue 28 on the command line (in-process, the working size lowered): `tuner encode` of an image above the
working size writes the tiled container by itself, `tuner info` lists its tiles and `tuner decode` renders it
at any size and crop, like any blob."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.library.test_tiled_encode import synthetic
from tuner_cli.main import main
from tuner_model.codec import decode_blob
from tuner_model.core import tiling
from tuner_model.core.coords import Crop
from tuner_model.core.image_io import load_image, save_image
from tuner_model.render.fitted import render_image


@pytest.fixture
def tiled_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    monkeypatch.setattr(tiling, "WORKING_SIZE", (72, 64))  # 120 × 64: two tiles
    source, out = tmp_path / "wide.png", tmp_path / "wide.tnr"
    save_image(synthetic(), source)
    assert main(["encode", str(source), "-o", str(out), "--bpp", "2", "--steps", "40", "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tiles"] == 2 and summary["bytes"] == out.stat().st_size and summary["bpp"] <= 2.0
    return out


def test_info_lists_the_tiles(tiled_blob: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tiled_blob)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["width"], info["height"], info["bytes"]) == (120, 64, tiled_blob.stat().st_size)
    tiles = info["tiles"]
    assert tiles["count"] == 2 and tiles["grid"] == [2, 1] and (tiles["tile_width"], tiles["tile_height"]) == (68, 64)
    assert [(t["column"], t["row"], t["left"], t["top"]) for t in tiles["list"]] == [(0, 0, 0, 0), (1, 0, 52, 0)]
    assert sum(t["parameters"] for t in tiles["list"]) == info["parameters"]
    assert all(t["psnr"] > 20 and t["model"]["input_width"] > 0 for t in tiles["list"])


def test_decode_renders_any_size_and_crop(tiled_blob: Path, tmp_path: Path) -> None:
    out = tmp_path / "crop.png"
    assert main(["decode", str(tiled_blob), "-o", str(out), "--crop", "0.25", "0", "0.75", "1", "--width", "120"]) == 0
    pixels = load_image(out)
    assert pixels.shape == (128, 120, 3)
    # the same pixels as the library's render of that region (PNG's 8 bits aside)
    want = render_image(decode_blob(tiled_blob.read_bytes()), 120, 128, Crop(0.25, 0.0, 0.75, 1.0))
    assert np.abs(pixels - want).max() <= 1 / 255 + 1e-6
    full = tmp_path / "full.png"
    assert main(["decode", str(tiled_blob), "-o", str(full)]) == 0
    assert load_image(full).shape == (64, 120, 3)
