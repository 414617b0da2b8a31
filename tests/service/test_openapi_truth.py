"""The OpenAPI says what the code enforces: each documented bound is the enforced one (a request at the bound
is not refused for it, one past it is), the statuses and headers each operation documents are those it sends,
problems are typed (each type documented in docs/SERVICE.md and served at /problems/NAME), every operation has
an example; the RateLimit headers; Prometheus request counts; /metrics reads only what finished since."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.openapi import settings_bounds
from service.api.problem_types import PROBLEM_TYPES
from service.records import Database
from service.records.tables import Job
from service.settings import Settings
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings

ROOT = Path(__file__).resolve().parents[2]
PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def blob(parrots: np.ndarray) -> bytes:
    return encode(parrots, EncodeSettings(steps=20, device="cpu", effort=1))[1]


def _settings(tmp_path: Path, **kw: object) -> Settings:
    base = {"data_dir": tmp_path, "render_compile": False, "rate_limit_per_s": 0, "comparisons": False,
            "signing_keys": "k1-0123456789abcdef", "max_render_width": 300, "max_render_height": 200,
            "max_render_pixels": 10**6, "max_steps": 50, "soft_time_limit_s": 100_000, "hard_time_limit_s": 100_001}
    return Settings(**{**base, **kw})


@pytest.fixture()
def api(tmp_path: Path, blob: bytes):
    with TestClient(create_app(_settings(tmp_path))) as c:
        c.image_id = c.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream"}).json()[
            "image_id"]  # type: ignore[attr-defined]
        yield c


def _bounds(schema: dict) -> tuple[float | None, float | None, bool, bool]:
    """(minimum, maximum, exclusive minimum?, integer?) of a parameter's schema (through anyOf)."""
    for s in schema.get("anyOf", [schema]):
        if s.get("type") in ("integer", "number"):
            low = s.get("minimum", s.get("exclusiveMinimum"))
            return low, s.get("maximum"), "exclusiveMinimum" in s, s["type"] == "integer"
    return None, None, False, False


# A request each bounded parameter is probed in: everything else in it valid and cheap (a 96x64 image).
_RENDER_BASE = {"width": "10"}
_OPERATIONS = {("get", "/v1/images/{image_id}/render"): _RENDER_BASE,
               ("get", "/v1/images/{image_id}/render-url"): _RENDER_BASE,
               ("get", "/v1/images"): {},
               ("post", "/v1/images"): {"steps": "5"}}


def _call(c: TestClient, method: str, path: str, query: dict[str, str], png: bytes):  # noqa: ANN202
    url = path.replace("{image_id}", c.image_id)  # type: ignore[attr-defined]
    if method == "post":
        return c.post(url, params=query, content=png, headers=PNG)
    return c.get(url, params=query)


def _refused_for(r, name: str) -> bool:  # noqa: ANN001
    """A 422 about this parameter (a validation problem naming it, or a render over the limits)."""
    if r.status_code != 422:
        return False
    body = r.json()
    return body["type"] == "/problems/render-limit" or (body["type"] == "/problems/validation"
                                                        and name in body["detail"])


def test_every_documented_bound_is_the_enforced_one(api: TestClient, parrots_path: Path) -> None:
    png = parrots_path.read_bytes()
    doc = api.get("/openapi.json").json()
    probed = set()
    for (method, path), base in _OPERATIONS.items():
        for p in doc["paths"][path][method].get("parameters", []):
            low, high, exclusive, integer = _bounds(p["schema"])
            name = p["name"]
            if p["in"] != "query" or (low is None and high is None):
                continue
            step = 1 if integer else 0.01
            cases = []
            if high is not None:
                cases += [(high, False), (high + step, True)]
            if low is not None:
                cases += [(low, True) if exclusive else (low, False), (low - step, True)]
            for value, refused in cases:
                query = {**base, name: str(int(value) if integer else value)}
                if name in ("w",):
                    query.pop("width", None)
                r = _call(api, method, path, query, png)
                assert _refused_for(r, name) == refused, (method, path, name, value, r.status_code, r.text)
            probed.add((path, name))
    # The bounds from the settings are this service's, in the document and in the code alike.
    assert {("/v1/images/{image_id}/render", n) for n in ("width", "height", "w", "h", "dpr", "quality")} <= probed
    assert ("/v1/images", "steps") in probed
    render = {p["name"]: p for p in doc["paths"]["/v1/images/{image_id}/render"]["get"]["parameters"]}
    assert _bounds(render["width"]["schema"])[1] == 300 and _bounds(render["height"]["schema"])[1] == 200
    upload = doc["paths"]["/v1/images"]["post"]
    assert upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["steps"]["maximum"] == 50
    # The form field is bounded as the query parameter is, and one message says so, however far past.
    for steps in ("51", "2000000"):
        r = api.post("/v1/images", files={"file": ("p.png", png, "image/png")}, data={"steps": steps})
        assert r.status_code == 422 and r.json()["detail"] == "steps: must be at most 50", r.text
        r = api.post(f"/v1/images?steps={steps}", content=png, headers=PNG)
        assert r.json()["detail"] == "steps: must be at most 50", r.text
        assert r.json()["errors"] == [{"loc": ["steps"], "msg": "must be at most 50"}]


def test_settings_bounds_follow_the_settings(tmp_path: Path) -> None:
    assert settings_bounds(_settings(tmp_path, max_render_width=1234, max_steps=7)) == {
        "width": 1234, "w": 1234, "height": 200, "h": 200, "steps": 7, "expires_in": 30 * 86400}


def test_statuses_and_headers_each_operation_sends(api: TestClient, parrots_path: Path) -> None:
    doc = api.get("/openapi.json").json()
    upload = doc["paths"]["/v1/images"]["post"]["responses"]
    assert "404" not in upload and {"202", "400", "401", "403", "413", "415", "422", "429", "503"} <= set(upload)
    assert "Location" in upload["202"]["headers"] and "Location" in doc["paths"]["/v1/blobs"]["post"]["responses"][
        "201"]["headers"]
    assert "403" in doc["paths"]["/v1/blobs"]["post"]["responses"]
    problem = doc["components"]["schemas"]["Problem"]["properties"]
    assert {"type", "title", "status", "detail", "instance", "errors"} <= set(problem)
    # What the document says, the API does: a 202 with its Location, a validation problem with its errors.
    r = api.post("/v1/images?steps=5", content=parrots_path.read_bytes(), headers=PNG)
    assert r.status_code == 202 and r.headers["location"].startswith("/v1/jobs/")
    bad = api.get(f"/v1/images/{api.image_id}/render?width=abc").json()  # type: ignore[attr-defined]
    assert bad["type"] == "/problems/validation" and bad["errors"][0]["loc"] == ["query", "width"]
    assert "Value error" not in api.get(f"/v1/images/{api.image_id}/render?crop=1,1,0,0").text  # type: ignore


def test_every_operation_has_an_example(api: TestClient) -> None:
    doc = api.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            examples = [m["example"] for r in op["responses"].values() for m in r.get("content", {}).values()
                        if "example" in m]
            assert examples, f"{method.upper()} {path} has no example"
            for code, r in op["responses"].items():
                for media, m in r.get("content", {}).items():
                    if media == "application/problem+json":
                        assert m["example"]["status"] == int(code) and m["example"]["type"].startswith("/problems/")


def test_problem_types_are_documented_and_served(api: TestClient) -> None:
    doc = (ROOT / "docs" / "SERVICE.md").read_text()
    table = dict(re.findall(r"^\| `/problems/([a-z-]+)` \| (\d{3}) \|", doc, flags=re.M))
    assert table == {name: str(p.status) for name, p in PROBLEM_TYPES.items()}
    for name, p in PROBLEM_TYPES.items():
        served = api.get(f"/problems/{name}").json()
        assert served["type"] == p.uri and served["status"] == p.status and served["title"] == p.title
    assert api.get("/problems/nope").json()["type"] == "/problems/not-found"


def test_ratelimit_headers_on_every_answer(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path, rate_limit_per_s=0.01, rate_limit_burst=3))) as c:
        seen = []
        for _ in range(4):
            r = c.get("/v1/images")
            assert r.headers["ratelimit-limit"] == "3"
            seen.append((r.status_code, r.headers["ratelimit-remaining"]))
        assert seen == [(200, "2"), (200, "1"), (200, "0"), (429, "0")]
        assert r.json()["type"] == "/problems/rate-limited" and int(r.headers["ratelimit-reset"]) > 0
        assert "ratelimit-limit" not in c.get("/healthz").headers  # not rate limited, so no headers


def test_request_counters_by_route_and_status(api: TestClient) -> None:
    api.get("/v1/images/img_nope")
    api.get("/v1/images/img_nope2")
    api.head("/v1/images")
    api.get("/no/such/path")
    text = api.get("/metrics").text
    assert 'tuner_http_requests_total{method="GET",route="/v1/images/{image_id}",status="404"} 2.0' in text
    assert 'tuner_http_requests_total{method="HEAD",route="/v1/images",status="200"} 1.0' in text
    assert 'tuner_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text


def _finished(db: Database, n: int, ago: float, status: str = "succeeded", seconds: float = 12.0) -> None:
    now = time.time()
    for _ in range(n):
        db.add_job(Job(id="job_" + uuid.uuid4().hex, image_id="img_x", status=status, progress=1.0, step=1,
                       params={}, upload_digest="0" * 64, attempts=1, cancel_requested=0, created_at=now - ago - 60,
                       finished_at=now - ago, fit_seconds=seconds if status == "succeeded" else None))


def test_metrics_read_only_what_finished_since_the_last_scrape(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path))) as c:
        db: Database = c.app.state.db
        _finished(db, 30, ago=3600)
        _finished(db, 2, ago=3600, status="failed")
        read: list[int] = []
        since = db.finished_since

        def counting(after: float, limit: int = 5000) -> list:
            rows = since(after, limit)
            read.append(len(rows))
            return rows

        db.finished_since = counting  # type: ignore[method-assign]
        text = c.get("/metrics").text
        assert 'tuner_jobs{state="succeeded"} 30.0' in text and 'tuner_jobs{state="failed"} 2.0' in text
        assert "tuner_fit_seconds_count 30.0" in text and 'tuner_fit_seconds_bucket{le="15"} 30.0' in text
        assert read == [32]  # the first scrape reads every finished job, once
        _finished(db, 1, ago=0, seconds=100.0)
        text = c.get("/metrics").text
        # Then what finished since, and what finished within LAG_S before the latest counted (read again in
        # case a commit came late; counted once): here the 32 of an hour ago, once more.
        assert read[-1] == 33
        assert "tuner_fit_seconds_count 31.0" in text and 'tuner_fit_seconds_bucket{le="60"} 30.0' in text
        text = c.get("/metrics").text
        assert read[-1] == 1 and "tuner_fit_seconds_count 31.0" in text  # only the last few minutes now
        assert 'tuner_jobs{state="succeeded"} 31.0' in text
