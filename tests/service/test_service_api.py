"""The API in process (real app, real SQLite records, real local blob store, the embedded broker; no
worker): uploads, dedupe and idempotency, blob uploads and rendering, caching headers, and every error
answering with a problem document."""

from __future__ import annotations

import io
import math
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.api.app import create_app
from service.api.problem_types import PROBLEM_TYPES
from service.settings import Settings
from service.storage import digest
from tuner_model.core.metrics import psnr
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings

PROBLEM = "application/problem+json"


def _problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["title"]
    assert PROBLEM_TYPES[body["type"].removeprefix("/problems/")].status == status  # a typed problem
    return body


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, max_upload_bytes=200_000, max_render_width=1000, max_render_height=1000,
                    max_render_pixels=300_000, max_steps=500, max_pending_jobs=3)


@pytest.fixture()
def client(settings: Settings):
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def blob(parrots: np.ndarray) -> bytes:
    _, data = encode(parrots, EncodeSettings(steps=40, device="cpu"))
    return data


def test_health_docs_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "storage": "ok", "broker": "ok"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/images", "/v1/jobs/{job_id}", "/v1/images/{image_id}/render", "/v1/blobs"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/images"]["post"]["requestBody"]["content"]
    text = client.get("/metrics").text
    assert 'tuner_jobs{state="queued"} 0.0' in text and "tuner_fit_seconds_count 0.0" in text


def test_upload_queues_a_job_and_dedupes(client: TestClient, parrots_path: Path) -> None:
    data = parrots_path.read_bytes()
    r = client.post("/v1/images?steps=30", files={"file": ("p.png", data, "image/png")})
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/jobs/{body['job_id']}"
    assert body["status"] == "queued" and not body["deduplicated"] and (body["width"], body["height"]) == (96, 64)
    job = client.get(r.headers["location"]).json()
    assert job["status"] == "queued" and job["progress"] == 0 and job["params"]["steps"] == 30
    # The same bytes and parameters, sent raw this time: the same job, not a second fit.
    r2 = client.post("/v1/images?steps=30", content=data, headers={"content-type": "image/png"})
    assert r2.status_code == 202 and r2.json()["job_id"] == body["job_id"] and r2.json()["deduplicated"]
    # Other parameters are another image.
    r3 = client.post("/v1/images", files={"file": ("p.png", data, "image/png")}, data={"steps": "31"})
    assert r3.status_code == 202 and r3.json()["image_id"] != body["image_id"]
    assert 'tuner_jobs{state="queued"} 2.0' in client.get("/metrics").text


def test_idempotency_key(client: TestClient, parrots_path: Path) -> None:
    data = parrots_path.read_bytes()
    h = {"Idempotency-Key": "abc-1"}
    a = client.post("/v1/images?steps=30", files={"file": ("p.png", data, "image/png")}, headers=h).json()
    b = client.post("/v1/images?steps=30", files={"file": ("p.png", data, "image/png")}, headers=h).json()
    assert a["job_id"] == b["job_id"] and b["deduplicated"]
    r = client.post("/v1/images?steps=40", files={"file": ("p.png", data, "image/png")}, headers=h)
    assert "different request" in _problem(r, 422)["detail"]


def test_cancel_a_queued_job(client: TestClient, parrots_path: Path) -> None:
    job_id = client.post("/v1/images?steps=30", content=parrots_path.read_bytes(),
                         headers={"content-type": "image/png"}).json()["job_id"]
    r = client.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    _problem(client.delete(f"/v1/jobs/{job_id}"), 409)


def test_upload_errors(client: TestClient, parrots_path: Path) -> None:
    png = parrots_path.read_bytes()
    _problem(client.get("/v1/jobs/job_nope"), 404)
    _problem(client.delete("/v1/jobs/job_nope"), 404)
    _problem(client.get("/v1/images/img_nope"), 404)
    _problem(client.get("/v1/images/img_nope/weights"), 404)
    _problem(client.get("/v1/images/img_nope/render?width=10"), 404)
    _problem(client.delete("/v1/images/img_nope"), 404)
    _problem(client.get("/v1/nothing"), 404)
    _problem(client.post("/v1/images", content=b"hello", headers={"content-type": "text/plain"}), 415)
    _problem(client.post("/v1/images", content=png[:300], headers={"content-type": "image/png"}), 422)  # truncated
    _problem(client.post("/v1/images", files={"file": ("x.txt", b"just text", "text/plain")}), 415)
    _problem(client.post("/v1/images", files={"other": ("p.png", png, "image/png")}), 400)
    _problem(client.post("/v1/images", content=b"", headers={"content-type": "image/png"}), 400)
    _problem(client.post("/v1/images?bpp=1&psnr=30", content=png, headers={"content-type": "image/png"}), 422)
    _problem(client.post("/v1/images?steps=501", content=png, headers={"content-type": "image/png"}), 422)
    _problem(client.post("/v1/images?steps=0", content=png, headers={"content-type": "image/png"}), 422)
    _problem(client.post("/v1/images?bpp=abc", content=png, headers={"content-type": "image/png"}), 422)


def test_413_is_counted_while_streaming(client: TestClient) -> None:
    def chunks():
        for _ in range(30):
            yield b"\0" * 10_000  # 300 kB, no Content-Length: only the running count can catch it

    r = client.post("/v1/images", content=chunks(), headers={"content-type": "image/png"})
    assert "larger than the limit" in _problem(r, 413)["detail"]
    r = client.post("/v1/images", files={"file": ("big.png", b"\0" * 300_000, "image/png")})
    _problem(r, 413)


def test_429_when_too_many_jobs_wait(client: TestClient) -> None:
    for i in range(3):
        im = Image.new("RGB", (8, 8), (i * 40, 0, 0))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        r = client.post("/v1/images", content=buf.getvalue(), headers={"content-type": "image/png"})
        assert r.status_code == 202
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 200, 0)).save(buf, "PNG")
    r = client.post("/v1/images", content=buf.getvalue(), headers={"content-type": "image/png"})
    _problem(r, 429)
    assert r.headers["retry-after"]


def test_blob_upload_render_and_caching(client: TestClient, blob: bytes, parrots: np.ndarray) -> None:
    r = client.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    img = r.json()
    assert r.headers["location"] == f"/v1/images/{img['image_id']}"
    assert (img["width"], img["height"], img["bytes"], img["source"]) == (96, 64, len(blob), "upload")
    created = datetime.fromisoformat(img["created_at"])  # RFC 3339 in UTC, not Unix seconds
    assert created.tzinfo is not None and abs(created.timestamp() - time.time()) < 600
    assert client.post("/v1/blobs", files={"file": ("b.tnr", blob)}).json()["image_id"] == img["image_id"]

    w = client.get(f"/v1/images/{img['image_id']}/weights")
    assert w.status_code == 200 and w.content == blob and w.headers["etag"] == f'"{img["blob_sha256"]}"'
    assert client.get(f"/v1/images/{img['image_id']}/weights",
                      headers={"If-None-Match": w.headers["etag"]}).status_code == 304

    base = f"/v1/images/{img['image_id']}/render"
    native = client.get(base)
    assert native.status_code == 200 and native.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(native.content)), dtype=np.float32) / 255
    assert pixels.shape == (64, 96, 3)
    assert psnr(pixels, parrots) > img["psnr"] - 0.5  # 8-bit rounding costs a little

    r = client.get(f"{base}?width=192")
    assert r.status_code == 200 and r.headers["x-render-cache"] == "miss"
    assert Image.open(io.BytesIO(r.content)).size == (192, 128)
    assert r.headers["cache-control"] == "private, no-cache" and "Authorization" in r.headers["vary"]
    etag = r.headers["etag"]
    again = client.get(f"{base}?width=192")
    assert again.headers["x-render-cache"] == "hit" and again.content == r.content and again.headers["etag"] == etag
    nm = client.get(f"{base}?width=192", headers={"If-None-Match": etag})
    assert nm.status_code == 304 and not nm.content
    assert client.get(f"{base}?height=128").headers["etag"] == etag  # the same canonical render
    assert client.get(f"{base}?width=192&format=webp").headers["etag"] != etag

    assert Image.open(io.BytesIO(client.get(f"{base}?width=100&height=100").content)).size == (100, 67)
    assert Image.open(io.BytesIO(client.get(f"{base}?width=100&height=100&fit=cover").content)).size == (100, 100)
    assert Image.open(io.BytesIO(client.get(f"{base}?width=100&height=100&fit=fill").content)).size == (100, 100)
    crop = client.get(f"{base}?crop=0,0,0.5,0.5&format=jpeg&quality=70")
    assert crop.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(crop.content)).size == (48, 32)
    assert Image.open(io.BytesIO(client.get(f"{base}?width=50&format=avif").content)).format == "AVIF"

    _problem(client.get(f"{base}?width=1001"), 422)
    _problem(client.get(f"{base}?width=900&height=900&fit=fill"), 422)  # area cap
    _problem(client.get(f"{base}?width=0"), 422)
    _problem(client.get(f"{base}?format=gif"), 422)
    _problem(client.get(f"{base}?crop=0.5,0,0.2,1"), 422)
    _problem(client.get(f"{base}?crop=nope"), 422)

    assert client.delete(f"/v1/images/{img['image_id']}").status_code == 204
    _problem(client.get(f"/v1/images/{img['image_id']}"), 404)
    _problem(client.get(f"{base}?width=192"), 404)


def test_bad_blobs_are_422(client: TestClient, blob: bytes) -> None:
    _problem(client.post("/v1/blobs", content=b"garbage" * 10, headers={"content-type": "application/octet-stream"}),
             422)
    _problem(client.post("/v1/blobs", content=blob[: len(blob) // 2],
                         headers={"content-type": "application/octet-stream"}), 422)
    _problem(client.post("/v1/blobs", content=blob, headers={"content-type": "image/png"}), 415)


def test_broker_down_is_503(tmp_path: Path, parrots_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
        body = _problem(r, 503)
        assert body["checks"]["broker"].startswith("error") and body["checks"]["storage"] == "ok"
        r = c.post("/v1/images?steps=30", content=parrots_path.read_bytes(), headers={"content-type": "image/png"})
        _problem(r, 503)


def test_renderer_compiles_in_the_background(tmp_path: Path, blob: bytes) -> None:
    """TUNER_RENDER_COMPILE: the API answers at once (eager renders) while the fused sine compiles, then
    reports it in /metrics and renders the same image with it."""
    from tuner_model import render as fast_render

    fast_render.warm_up(False)
    try:
        with TestClient(create_app(Settings(data_dir=tmp_path, render_compile=True))) as c:
            assert c.get("/healthz").status_code == 200
            image_id = c.post("/v1/blobs", content=blob,
                              headers={"content-type": "application/octet-stream"}).json()["image_id"]
            deadline = time.time() + 180
            while "tuner_render_compiled 1.0" not in c.get("/metrics").text:
                if time.time() > deadline or not any(t.name == "render-warm-up" for t in threading.enumerate()) \
                        and not fast_render.compiled_in_use():
                    pytest.skip("torch.compile is unavailable here (no C++ compiler)")
                time.sleep(0.2)
            r = c.get(f"/v1/images/{image_id}/render?width=150&format=png")
            assert r.status_code == 200
            compiled = np.asarray(Image.open(io.BytesIO(r.content)), dtype=np.int16)
        fast_render.warm_up(False)
        with TestClient(create_app(Settings(data_dir=tmp_path / "eager", render_compile=False))) as c:
            assert "tuner_render_compiled 0.0" in c.get("/metrics").text
            image_id = c.post("/v1/blobs", content=blob,
                              headers={"content-type": "application/octet-stream"}).json()["image_id"]
            r = c.get(f"/v1/images/{image_id}/render?width=150&format=png")
            eager = np.asarray(Image.open(io.BytesIO(r.content)), dtype=np.int16)
        assert np.abs(compiled - eager).max() <= 1  # float rounding may move a pixel by one level
    finally:
        fast_render.warm_up(False)


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def test_effort_is_an_encoding_parameter(client: TestClient, parrots_path: Path) -> None:
    from tuner_model.rate.effort import DEFAULT_EFFORT

    data = parrots_path.read_bytes()
    default = client.post("/v1/images?steps=30", content=data, headers={"content-type": "image/png"})
    assert default.status_code == 202, default.text
    assert default.json()["params"]["effort"] == DEFAULT_EFFORT
    r = client.post("/v1/images?steps=30&effort=2", content=data, headers={"content-type": "image/png"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["params"]["effort"] == 2 and not body["deduplicated"]
    job = client.get(f"/v1/jobs/{body['job_id']}").json()
    assert job["params"]["effort"] == 2 and "eta_s" in job and job["eta_s"] is None  # queued: no estimate yet
    # The same bytes at another effort are another job and another image; as a form field too.
    r6 = client.post("/v1/images", files={"file": ("p.png", data, "image/png")}, data={"steps": "30", "effort": "6"})
    assert r6.status_code == 202, r6.text
    ids = {default.json()["job_id"], body["job_id"], r6.json()["job_id"]}
    assert len(ids) == 3 and len({default.json()["image_id"], body["image_id"], r6.json()["image_id"]}) == 3
    assert r6.json()["params"]["effort"] == 6
    # ...and the same effort again is the same job.
    again = client.post("/v1/images", files={"file": ("p.png", data, "image/png")}, data={"steps": "30", "effort": "2"})
    assert again.json()["job_id"] == body["job_id"] and again.json()["deduplicated"]
    paths = client.get("/openapi.json").json()["paths"]["/v1/images"]["post"]
    form = paths["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {k: form["effort"][k] for k in ("type", "minimum", "maximum")} == {"type": "integer", "minimum": 1,
                                                                             "maximum": 9}
    # The form's fields and the query's parameters are generated from EncodeRequest, where the bounds live.
    from tuner_model.rate.request import field_schemas

    # (steps: the OpenAPI states this service's own, lower bound, TUNER_MAX_STEPS: service/api/openapi.py)
    assert all(form[k] == v for k, v in field_schemas().items() if k != "steps")
    query = {p["name"]: p["schema"] for p in paths["parameters"]}
    assert query["effort"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 9}


def test_effort_out_of_range_is_422(client: TestClient, parrots_path: Path) -> None:
    data = parrots_path.read_bytes()
    for bad in ("0", "10", "-1", "x", "2.5"):
        body = _problem(client.post(f"/v1/images?effort={bad}", content=data, headers={"content-type": "image/png"}),
                        422)
        assert "effort" in body["detail"], body
        body = _problem(client.post("/v1/images", files={"file": ("p.png", data, "image/png")}, data={"effort": bad}),
                        422)
        assert "effort" in body["detail"], body
    assert 'tuner_jobs{state="queued"} 0.0' in client.get("/metrics").text


def test_job_stored_without_effort_means_the_default(client: TestClient) -> None:
    """A job (and an image) recorded before `effort` existed still loads, at the default effort."""
    from service.records import Image as ImageRow
    from service.records import Job
    from tuner_model.rate.effort import DEFAULT_EFFORT

    db = client.app.state.db
    db.add_job(Job(id="job_old", image_id="img_old", status="succeeded", progress=1.0, step=10, steps=10,
                   params={"bpp": None, "psnr": None, "steps": 10}, upload_digest="0" * 64, attempts=1,
                   cancel_requested=0, created_at=time.time()))
    db.add_image(ImageRow(id="img_old", width=8, height=8, channels=3, bytes=100, bpp=12.5, psnr=30.0, parameters=50,
                          params={"steps": 10}, blob_digest="0" * 64, source="fit", job_id="job_old",
                          created_at=time.time()))
    job = client.get("/v1/jobs/job_old").json()
    assert job["params"] == {"bpp": None, "psnr": None, "steps": 10, "effort": DEFAULT_EFFORT}
    assert job["eta_s"] == 0  # succeeded, even though no worker of this version wrote it
    assert client.get("/v1/images/img_old").json()["params"]["effort"] == DEFAULT_EFFORT


def test_upload_estimated_past_the_time_limit_is_refused(tmp_path: Path, parrots_path: Path) -> None:
    """The API refuses what the worker's soft time limit would kill: the estimate, times 1.5, must fit."""
    from service.api.schemas import EncodeParams
    from service.estimate import estimate_fit_seconds, job_plan

    data = parrots_path.read_bytes()
    # 5 s of overhead alone (times 1.5) is more than a 6 s limit.
    with TestClient(create_app(Settings(data_dir=tmp_path / "a", soft_time_limit_s=6))) as c:
        body = _problem(c.post("/v1/images?effort=1", content=data, headers={"content-type": "image/png"}), 422)
        assert "estimated at 0.1 minutes" in body["detail"] and "6 s" in body["detail"], body
        # At effort 1 there is no lower effort to suggest (issue 25); the problem's type says what it is.
        assert "effort" not in body["detail"] and "bpp" in body["detail"] and "smaller image" in body["detail"]
        assert body["type"] == "/problems/time-limit"
        body = _problem(c.post("/v1/images?psnr=30", content=data, headers={"content-type": "image/png"}), 422)
        assert "psnr target" in body["detail"]
        assert 'tuner_jobs{state="queued"} 0.0' in c.get("/metrics").text
        assert not c.app.state.store.exists(f"uploads/{digest(data)}")  # nothing stored for a refused job
    # Slow workers (the setting) and a limit between the two estimates: the default effort on this small
    # image is refused, effort 1 at a lower rate is accepted.
    slow = Settings(data_dir=tmp_path / "b", fit_seconds_per_pixel_neuron=2e-6)
    default = estimate_fit_seconds(job_plan(EncodeParams(), 96, 64, 3, slow), slow)
    low = estimate_fit_seconds(job_plan(EncodeParams(effort=1, bpp=0.5), 96, 64, 3, slow), slow)
    limit = math.ceil(1.5 * low) + 1
    assert limit < 1.5 * default
    with TestClient(create_app(slow.model_copy(update={"soft_time_limit_s": limit}))) as c:
        body = _problem(c.post("/v1/images", content=data, headers={"content-type": "image/png"}), 422)
        assert f"estimated at {default / 60:.1f} minutes ({default:.0f} s)" in body["detail"], body
        assert f"time limit of {limit / 60:.1f} minutes ({limit} s)" in body["detail"], body
        assert c.post("/v1/images?effort=1&bpp=0.5", content=data,
                      headers={"content-type": "image/png"}).status_code == 202


def test_fit_estimate(tmp_path: Path) -> None:
    from service.api.schemas import EncodeParams
    from service.estimate import estimate_fit_seconds, job_plan, seconds_per_pixel_neuron
    from tuner_model.rate import table
    from tuner_model.rate.plan import CPU_SECONDS_PER_PIXEL_NEURON

    cpu = Settings(data_dir=tmp_path)
    assert seconds_per_pixel_neuron(cpu) == CPU_SECONDS_PER_PIXEL_NEURON  # "auto" counts as the CPU
    cuda = Settings(data_dir=tmp_path, fit_device="cuda:0")
    assert seconds_per_pixel_neuron(cuda) == CPU_SECONDS_PER_PIXEL_NEURON / 20
    assert seconds_per_pixel_neuron(Settings(data_dir=tmp_path, fit_seconds_per_pixel_neuron=1e-8)) == 1e-8
    def seconds(params: EncodeParams, settings: Settings = cpu) -> float:
        return estimate_fit_seconds(job_plan(params, 768, 512, 3, settings), settings)

    at = {e: seconds(EncodeParams(bpp=1, effort=e)) for e in range(1, 10)}
    assert all(at[e] <= at[e + 1] for e in range(1, 9)) and at[9] > 2 * at[4]
    assert 60 < at[4] < 1200  # 1.3 to 11 minutes on 2 cores at the default effort (tuner_model/effort.py)
    assert seconds(EncodeParams(bpp=1), cuda) < at[4] / 2
    # A psnr target budgets a second attempt; a higher rate is a wider network.
    one = seconds(EncodeParams(bpp=1))
    assert seconds(EncodeParams(bpp=4)) > one
    assert seconds(EncodeParams(psnr=30)) > 1.5 * seconds(EncodeParams(bpp=table.bpp_for_psnr(30)))
