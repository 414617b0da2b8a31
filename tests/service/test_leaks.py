"""Issue 24, items 5-7, over real HTTP: keyed answers are `private` and vary with Authorization (only a signed
URL's is `public`, for no longer than the URL is valid); a render cache hit tells no tenant about another's
image; /metrics is for the operator's tenants only; /readyz says what failed, not why."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from live import live_api

from service.access.keys import create_key
from service.api.app import create_app
from service.records import Database
from service.settings import Settings
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings

SIGNING = "k1-0123456789abcdef"


@pytest.fixture(scope="module")
def blob(parrots: np.ndarray) -> bytes:
    return encode(parrots, EncodeSettings(steps=30, device="cpu"))[1]


def _setup(tmp_path: Path, **kw: object) -> tuple[Settings, dict[str, dict[str, str]]]:
    settings = Settings(data_dir=tmp_path, rate_limit_per_s=0, render_compile=False, signing_keys=SIGNING, **kw)
    db = Database(settings.resolved_database_url)
    return settings, {t: {"Authorization": f"Bearer {create_key(db, t)[1]}"} for t in ("alice", "bob", "ops")}


def _put(c, blob: bytes, auth: dict[str, str]) -> str:  # noqa: ANN001
    r = c.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream", **auth})
    assert r.status_code == 201, r.text
    return r.json()["image_id"]


def test_keyed_answers_are_private_and_signed_ones_public(tmp_path: Path, blob: bytes) -> None:
    settings, keys = _setup(tmp_path)
    with live_api(settings) as c:
        img = _put(c, blob, keys["alice"])
        for path in ("/weights", "/render?width=40", "/render?width=40&format=auto"):
            r = c.get(f"/v1/images/{img}{path}", headers=keys["alice"])
            assert r.status_code == 200
            assert r.headers["cache-control"] == "private, no-cache", path
            assert "Authorization" in r.headers["vary"], path
        url = c.get(f"/v1/images/{img}/render-url?width=40", headers=keys["alice"]).json()["url"]
        r = c.get(url)
        assert r.status_code == 200 and r.headers["cache-control"].startswith("public, max-age=")
        url = c.get(f"/v1/images/{img}/render-url?width=40&expires_in=600", headers=keys["alice"]).json()["url"]
        max_age = int(c.get(url).headers["cache-control"].split("max-age=")[1].split(",")[0])
        assert 590 <= max_age <= 600  # no longer than the URL is valid


def test_render_cache_is_no_oracle_across_tenants(tmp_path: Path, blob: bytes) -> None:
    settings, keys = _setup(tmp_path)
    with live_api(settings) as c:
        a, b = _put(c, blob, keys["alice"]), _put(c, blob, keys["bob"])
        first = c.get(f"/v1/images/{a}/render?width=320&format=webp", headers=keys["alice"])
        assert first.headers["x-render-cache"] == "miss"
        assert c.get(f"/v1/images/{a}/render?width=320&format=webp",
                     headers=keys["alice"]).headers["x-render-cache"] == "hit"
        probe = c.get(f"/v1/images/{b}/render?width=320&format=webp", headers=keys["bob"])
        assert probe.headers["x-render-cache"] == "miss"  # alice's render tells bob nothing
        assert probe.headers["etag"] != first.headers["etag"] and probe.content == first.content


def test_metrics_only_for_the_operators_tenants(tmp_path: Path) -> None:
    settings, keys = _setup(tmp_path, metrics_tenants="ops")
    with live_api(settings) as c:
        assert c.get("/metrics", headers=keys["alice"]).status_code == 403
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=keys["ops"]).status_code == 200


def test_readyz_names_what_failed_not_why(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as c:
        started = time.monotonic()
        r = c.get("/readyz")
        assert r.status_code == 503 and time.monotonic() - started < 20
        body = r.json()
        assert body["checks"] == {"database": "ok", "storage": "ok", "broker": "error"}
        assert "127.0.0.1" not in r.text and "refused" not in r.text.lower()
