"""Bounded render cost over real HTTP: blobs no encoder of ours would make are refused before decoding; a
render over the compute budget is refused before it starts; renders beyond the free renderers wait in a short
bounded queue (8 concurrent misses all answered), a full queue or a long wait answers 429; identical
concurrent misses render once; a render stops at its time limit or when its client has gone; `format=auto`
follows Accept; CORS only when configured."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from live import live_api

from service.settings import Settings
from tuner_model.codec import decode_blob, encode_blob, read_info
from tuner_model.core.errors import Stopped
from tuner_model.core.stop import stop_when
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings
from tuner_model.render.fitted import render_image

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def blob(parrots: np.ndarray) -> bytes:
    return encode(parrots, EncodeSettings(steps=30, device="cpu"))[1]


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, rate_limit_per_s=0, render_compile=False, **kw)


def _problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    return r.json()


def _put(c: httpx.Client, blob: bytes) -> httpx.Response:
    return c.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream"})


def _hold(c: httpx.Client) -> threading.Event:
    """Occupies every render thread until the returned event is set."""
    release = threading.Event()
    for _ in range(c.app.state.settings.render_concurrency):
        c.app.state.renderer._pool.submit(release.wait, 30)
    return release


def _until(cond, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_hostile_blobs_are_refused_before_decoding(tmp_path: Path, blob: bytes) -> None:
    fitted = decode_blob(blob)
    huge_canvas = encode_blob(dataclasses.replace(fitted, width=65536, height=65536))
    tiny_canvas = encode_blob(dataclasses.replace(fitted, width=8, height=8))  # a network far too big for 8x8
    with live_api(_settings(tmp_path, max_image_pixels=4_000_000)) as c:
        assert "more pixels than an upload may have" in _problem(_put(c, huge_canvas), 422)["detail"]
        assert "the encoder makes at most" in _problem(_put(c, tiny_canvas), 422)["detail"]
        assert _put(c, blob).status_code == 201


def test_render_budget_is_checked_before_work(tmp_path: Path, blob: bytes) -> None:
    budget = 200 * 200 * read_info(blob).parameters
    with live_api(_settings(tmp_path, max_render_work=budget, signing_keys="s" * 20)) as c:
        img = _put(c, blob).json()["image_id"]
        assert c.get(f"/v1/images/{img}/render?width=150").status_code == 200
        body = _problem(c.get(f"/v1/images/{img}/render?width=600"), 422)
        assert "render budget" in body["detail"]
        _problem(c.get(f"/v1/images/{img}/render-url?width=600"), 422)  # never signed either


def test_eight_concurrent_misses_are_all_answered(tmp_path: Path, blob: bytes) -> None:
    with live_api(_settings(tmp_path, render_concurrency=2, render_queue_max=32)) as c:
        img = _put(c, blob).json()["image_id"]
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda w: c.get(f"/v1/images/{img}/render?width={200 + w}").status_code, range(8)))
        assert codes == [200] * 8


def test_full_queue_and_long_wait_answer_429(tmp_path: Path, blob: bytes) -> None:
    settings = _settings(tmp_path, render_concurrency=1, render_queue_max=0, render_queue_timeout_s=0.3)
    with live_api(settings) as c:
        img = _put(c, blob).json()["image_id"]
        release = _hold(c)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(c.get, f"/v1/images/{img}/render?width=40")
            _until(lambda: c.app.state.renderer._pending == 1)
            full = c.get(f"/v1/images/{img}/render?width=41")  # the one renderer is spoken for
            assert "waiting" in _problem(full, 429)["detail"] and full.headers["retry-after"]
            time.sleep(0.4)
            release.set()
            late = waiting.result()
        assert "waited" in _problem(late, 429)["detail"]
        assert c.get(f"/v1/images/{img}/render?width=40").status_code == 200  # free again


def test_identical_misses_render_once(tmp_path: Path, blob: bytes) -> None:
    with live_api(_settings(tmp_path, render_concurrency=1)) as c:
        img = _put(c, blob).json()["image_id"]
        renderer = c.app.state.renderer
        release = _hold(c)
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(c.get, f"/v1/images/{img}/render?width=64") for _ in range(4)]
            _until(lambda: sum(len(f.clients) for f in list(renderer._flights.values())) == 4)
            assert len(renderer._flights) == 1
            release.set()
            answers = [f.result() for f in futures]
        assert [r.status_code for r in answers] == [200] * 4
        assert len({r.content for r in answers}) == 1 and renderer.shared == 3


def test_render_time_limit_and_client_gone(tmp_path: Path, blob: bytes) -> None:
    with live_api(_settings(tmp_path, render_timeout_s=1e-6)) as c:
        img = _put(c, blob).json()["image_id"]
        assert "time limit" in _problem(c.get(f"/v1/images/{img}/render?width=300"), 503)["detail"]
    with live_api(_settings(tmp_path / "b", render_concurrency=1)) as c:
        img = _put(c, blob).json()["image_id"]
        renderer = c.app.state.renderer
        release = _hold(c)
        with pytest.raises(httpx.ReadTimeout):
            c.get(f"/v1/images/{img}/render?width=77", timeout=0.5)  # the client gives up while it waits
        _until(lambda: all(f.abandoned() for f in list(renderer._flights.values())))
        release.set()
        _until(lambda: not renderer._flights)
        assert (tmp_path / "b" / "blobs").is_dir()
        assert not list((tmp_path / "b" / "blobs").glob("renders/*/*"))  # stopped before rendering: none cached
        assert c.get(f"/v1/images/{img}/render?width=77").status_code == 200
        assert len(list((tmp_path / "b" / "blobs").glob("renders/*/*"))) == 1  # (where a render would be)
    fitted = decode_blob(blob)
    with stop_when(lambda: "client gone"), pytest.raises(Stopped, match="client gone"):
        render_image(fitted, 500, 300)


def test_format_auto_follows_accept(tmp_path: Path, blob: bytes) -> None:
    with live_api(_settings(tmp_path)) as c:
        img = _put(c, blob).json()["image_id"]
        for accept, media in (("image/avif,image/webp,*/*", "image/avif"), ("image/webp,*/*;q=0.8", "image/webp"),
                              ("*/*", "image/png")):
            r = c.get(f"/v1/images/{img}/render?width=32&format=auto", headers={"Accept": accept})
            assert r.status_code == 200 and r.headers["content-type"] == media
            assert "Accept" in r.headers["vary"].split(", ")
        assert "Accept" not in c.get(f"/v1/images/{img}/render?width=32&format=webp").headers.get("vary", "")


def test_cors_only_when_configured(tmp_path: Path) -> None:
    pre = {"Origin": "https://page.example", "Access-Control-Request-Method": "GET"}
    with live_api(_settings(tmp_path)) as c:
        assert "access-control-allow-origin" not in c.options("/v1/images/x", headers=pre).headers
    with live_api(_settings(tmp_path / "b", cors_origins="https://page.example")) as c:
        r = c.options("/v1/images/x", headers=pre)
        assert r.headers["access-control-allow-origin"] == "https://page.example"


def _zeros_blob() -> bytes:
    """Issue 24, item 4: a few KB of zeros declaring a 1000x1000 image and the largest network the encoder
    plans for it (3.15 M parameters), every tensor coded at Q = 1."""
    import torch

    from tuner_model.codec.quant import QuantSpec
    from tuner_model.models import build_model
    from tuner_model.models.fitted import FittedImage
    from tuner_model.rate.plan import default_config
    from tuner_model.rate.request import BPP_MAX
    from tuner_model.rate.table import plan_for_bpp

    top = plan_for_bpp(BPP_MAX, 1000, 1000, 3)
    config = default_config(1000, 1000, 3, top.width, top.depth)
    model = build_model(config)
    with torch.no_grad():
        for t in model.parameters():
            t.zero_()
    return encode_blob(FittedImage(config, 1000, 1000, model), QuantSpec(levels=1))


def test_a_network_not_paid_for_in_bytes_is_refused_before_decoding(tmp_path: Path, blob: bytes) -> None:
    zeros = _zeros_blob()
    info = read_info(zeros)
    assert len(zeros) < 10_000 and info.parameters > 3_000_000
    with live_api(_settings(tmp_path)) as c:
        started = time.perf_counter()
        body = _problem(_put(c, zeros), 422)
        assert "bits per parameter" in body["detail"]
        assert time.perf_counter() - started < 0.4  # refused from the header: decoding it takes ~0.5 s
        assert _put(c, blob).status_code == 201  # a blob of our encoder's passes


def test_the_output_encode_is_priced_and_timed(tmp_path: Path, blob: bytes) -> None:
    from service.api.render import ENCODE_SECONDS_PER_MPIXEL, WORK_PER_SECOND

    params = read_info(blob).parameters
    png = 400 * 400 * (params + ENCODE_SECONDS_PER_MPIXEL["png"] * 1e-6 * WORK_PER_SECOND)
    with live_api(_settings(tmp_path, max_render_work=png * 1.01)) as c:
        img = _put(c, blob).json()["image_id"]
        assert c.get(f"/v1/images/{img}/render?width=400&format=png").status_code == 200
        assert "render budget" in _problem(c.get(f"/v1/images/{img}/render?width=400&format=avif"), 422)["detail"]
    # An encode that can't finish within the render's time limit is not started.
    with live_api(_settings(tmp_path / "slow", render_timeout_s=0.5, max_render_work=1e15)) as c:
        img = _put(c, blob).json()["image_id"]
        assert "time limit" in _problem(c.get(f"/v1/images/{img}/render?width=1200&format=avif"), 503)["detail"]
