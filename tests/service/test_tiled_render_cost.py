"""Issue 28, item 5, in the service: a tiled (version-4) blob's render is priced by the tiles that meet the
requested region (api/render.RenderCost), each over the output pixels in its blend support, not by every
tile's parameters. The price is exactly what render/tiled.py evaluates; a crop inside one tile costs about one
tile; over real HTTP an over-budget full render is refused with the same problem+json as any over-budget
render while the crop is served (and signed).

The blob is real and tiny: a 120×96 crop of the shipped parrots, encoded by rate/tiles.encode_any with the
working size lowered to 72×56 (2 × 2 tiles of 68×56, 16 pixels apart), 10 steps (the cost depends on the
networks' shapes, not on the fit)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from live import live_api

from service.api.render import RenderPlan, check_work
from service.api.render_cost import CostCache, RenderCost, blob_cost
from service.api.render_errors import OverLimits
from service.settings import Settings
from service.storage import BlobNotFound
from tests.conftest import sample_path
from tuner_model.codec import TiledInfo, decode_blob, read_info
from tuner_model.codec.tiled_blob import _parse
from tuner_model.core.coords import Crop
from tuner_model.core.image_io import load_image
from tuner_model.models.fitted import FittedImage
from tuner_model.rate.request import EncodeSettings
from tuner_model.rate.tiles import encode_any
from tuner_model.render import tiled as tiled_render
from tuner_model.render.fitted import render_image

W, H = 120, 96
WORKING = (72, 56)
INSIDE_TILE_0 = (0.0, 0.0, 0.4, 0.4)  # x 0-48, y 0-38.4: tile 0's own pixels (tile 1's support starts at 52)
PROBLEM = "application/problem+json"
PNG_ENCODE_WORK = 0.15 * 1.5e10 / 1e6  # api/render: the output encode, priced per pixel


@pytest.fixture(scope="module")
def blob() -> bytes:
    image = np.ascontiguousarray(load_image(sample_path("parrots-192x128.png"))[:H, :W])
    # equal shares: every tile the same network, so "one tile's network per pixel" is one number
    _, data = encode_any(image, EncodeSettings(bpp=2.0, steps=10, device="cpu"), working=WORKING, allocation="equal")
    return data


@pytest.fixture(scope="module")
def info(blob: bytes) -> TiledInfo:
    info = read_info(blob)
    assert isinstance(info, TiledInfo) and (info.grid.nx, info.grid.ny) == (2, 2)
    assert (info.grid.tile_width, info.grid.tile_height) == (68, 56)
    return info


WHOLE = (0.0, 0.0, 1.0, 1.0)
CROP = (48, 38, INSIDE_TILE_0)  # a render's (width, height, crop): tile 0's corner at native scale
FULL = (W, H, WHOLE)


def _plan(w: int, h: int, crop: tuple[float, float, float, float]) -> RenderPlan:
    return RenderPlan(w, h, crop, "png", None)


def test_a_crop_inside_one_tile_costs_one_tile(blob: bytes, info: TiledInfo) -> None:
    cost = blob_cost(blob, info.parameters)
    tile = info.tiles[0].parameters
    assert cost.grid == info.grid and cost.tiles == tuple(t.parameters for t in info.tiles)
    assert cost.meeting(*CROP) == [0]
    assert cost.work(*CROP) == 48 * 38 * tile  # one tile's network per output pixel
    assert cost.meeting(*FULL) == [0, 1, 2, 3]
    assert cost.work(*CROP) < cost.work(*FULL) / 5
    # The whole image costs about one tile's network per output pixel (the overlaps twice), not all four.
    assert W * H * tile < cost.work(*FULL) < 1.4 * W * H * tile < W * H * info.parameters / 2
    # At the same output size, a crop inside one tile costs one tile per pixel; the full image a bit more.
    assert cost.work(W, H, INSIDE_TILE_0) == W * H * tile < cost.work(*FULL)
    # A one-network blob is priced as before, by its parameters over every output pixel.
    assert blob_cost(_parse(blob)[1][0], tile) == RenderCost(tile)
    assert RenderCost(tile).work(*FULL) == W * H * tile


@pytest.mark.parametrize("size,crop", [
    ((W, H), WHOLE),
    ((48, 38), INSIDE_TILE_0),
    ((70, 50), (0.25, 0.2, 0.8, 0.75)),  # across the tile corner: all four tiles
    ((200, 90), (0.3, 0.1, 0.7, 0.5)),  # an upscale across the vertical seam (tiles 0 and 1)
    ((37, 29), WHOLE),  # a thumbnail
])
def test_the_price_is_what_render_tiled_evaluates(monkeypatch: pytest.MonkeyPatch, blob: bytes, info: TiledInfo,
                                                  size: tuple[int, int], crop: tuple[float, ...]) -> None:
    evaluated: list[tuple[int, int]] = []  # (tile parameters, output pixels) per tile evaluation
    real = tiled_render.tile_values

    def counting(tile: FittedImage, px: np.ndarray, py: np.ndarray, *args, **kwargs) -> torch.Tensor:  # noqa: ANN002, ANN003
        evaluated.append((sum(p.numel() for p in tile.model.parameters()), len(px) * len(py)))
        return real(tile, px, py, *args, **kwargs)

    monkeypatch.setattr(tiled_render, "tile_values", counting)
    render_image(decode_blob(blob), *size, Crop(*crop))
    cost = blob_cost(blob, info.parameters)
    assert len(evaluated) == len(cost.meeting(*size, crop))
    assert sum(n * pixels for n, pixels in evaluated) == cost.work(*size, crop)


def test_check_work_counts_only_the_meeting_tiles(blob: bytes, info: TiledInfo) -> None:
    cost = blob_cost(blob, info.parameters)
    crop, full = _plan(*CROP), _plan(*FULL)
    budget = int(1.05 * (cost.work(*CROP) + 48 * 38 * PNG_ENCODE_WORK))
    settings = Settings(max_render_work=budget, render_compile=False)
    check_work(crop, cost, settings)  # served
    with pytest.raises(OverLimits, match="over the render budget"):
        check_work(crop, info.parameters, settings)  # every tile's parameters: what the check was before
    with pytest.raises(OverLimits, match=r"4 of its 4 tiles.*render budget"):
        check_work(full, cost, settings)


class _Store:
    """Blobs by key, each read counted."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs, self.reads = blobs, 0

    def get(self, key: str) -> bytes:
        self.reads += 1
        if key not in self.blobs:
            raise BlobNotFound(key)
        return self.blobs[key]


def test_the_cost_is_read_once_per_blob(blob: bytes, info: TiledInfo) -> None:
    store = _Store({"blobs/a": blob, "blobs/b": _parse(blob)[1][0]})
    costs = CostCache(store, entries=1)  # type: ignore[arg-type]
    assert costs.get("a", 1) == costs.get("a", 1) == blob_cost(blob, info.parameters) and store.reads == 1
    assert costs.get("b", 989) == RenderCost(989) and store.reads == 2
    assert costs.get("a", 1).grid == info.grid and store.reads == 3  # one entry kept: "a" was dropped
    assert costs.get("missing", 1234) == RenderCost(1234)  # the whole count; the render answers 404


def _problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    return r.json()


def _put(c: httpx.Client, data: bytes) -> str:
    r = c.post("/v1/blobs", content=data, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return r.json()["image_id"]


def test_over_budget_full_render_refused_and_crop_served(tmp_path: Path, blob: bytes, info: TiledInfo) -> None:
    cost = blob_cost(blob, info.parameters)
    crop_work = cost.work(*CROP) + 48 * 38 * PNG_ENCODE_WORK
    budget = int(1.05 * crop_work)
    assert 48 * 38 * (info.parameters + PNG_ENCODE_WORK) > budget  # all four tiles' count would refuse the crop
    one_tile = _parse(blob)[1][0]  # tile 0's own version-2 blob: a one-network image of 68×56
    settings = Settings(data_dir=tmp_path, rate_limit_per_s=0, render_compile=False, max_render_work=budget,
                        signing_keys="s" * 20)
    with live_api(settings) as c:
        tiled, single = _put(c, blob), _put(c, one_tile)
        crop = c.get(f"/v1/images/{tiled}/render?width=48&crop=0,0,0.4,0.4")
        assert crop.status_code == 200, crop.text
        assert (crop.headers["x-result-width"], crop.headers["x-result-height"]) == ("48", "38")
        assert c.get(f"/v1/images/{tiled}/render-url?width=48&crop=0,0,0.4,0.4").status_code == 200
        refused = _problem(c.get(f"/v1/images/{tiled}/render"), 422)
        assert "render budget" in refused["detail"] and "4 of its 4 tiles" in refused["detail"]
        other = _problem(c.get(f"/v1/images/{single}/render"), 422)  # a one-network blob over the same budget
        assert "render budget" in other["detail"]
        same = ("type", "title", "status")
        assert {k: refused[k] for k in same} == {k: other[k] for k in same}
        assert refused["type"].endswith("/render-limit")
        _problem(c.get(f"/v1/images/{tiled}/render-url"), 422)  # never signed either
