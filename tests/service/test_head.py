"""HEAD on every GET route, over real HTTP (what `curl -I` sends): the status and headers its GET gives
(200, 304, 401, 404), and no body. The routes come from the app itself, so a new GET route is covered."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from live import live_api

from service.settings import Settings
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings

KEY = "tnr_head-test-key"
SAME = ("content-type", "content-length", "etag", "cache-control", "location", "allow", "x-result-width",
        "x-result-height", "content-disposition", "vary")
VARIES = {"/metrics"}  # its counters move between the two requests: the length may differ


@pytest.fixture(scope="module")
def blob(parrots: np.ndarray) -> bytes:
    _, data = encode(parrots, EncodeSettings(steps=20, device="cpu", effort=1))
    return data


def get_paths(app) -> list[str]:  # noqa: ANN001
    """Every GET path: the documented operations and the page's (not in the OpenAPI)."""
    paths = [p for p, item in app.openapi()["paths"].items() if "get" in item]
    return [*paths, "/", "/docs", "/redoc", "/openapi.json", "/static/app.js"]


def _fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


def _compare(client, url: str, headers: dict[str, str] | None = None) -> int:  # noqa: ANN001
    get = client.get(url, headers=headers)
    head = client.head(url, headers=headers)
    assert head.status_code == get.status_code, (url, get.status_code, head.status_code, get.text[:300])
    assert head.content == b"", url
    for h in SAME:
        if h == "content-length" and url.split("?")[0] in VARIES:
            continue
        assert head.headers.get(h) == get.headers.get(h), (url, h, get.headers.get(h), head.headers.get(h))
    return get.status_code


def test_head_answers_as_get_on_every_get_route(tmp_path: Path, blob: bytes, parrots_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, render_compile=False, bootstrap_key=KEY, signing_keys="k1-0123456789abcdef",
                        comparisons=False)
    auth = {"Authorization": f"Bearer {KEY}"}
    with live_api(settings) as c:
        image_id = c.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream",
                                                               **auth}).json()["image_id"]
        job_id = c.post("/v1/images?steps=20", content=parrots_path.read_bytes(),
                        headers={"content-type": "image/png", **auth}).json()["job_id"]
        c.delete(f"/v1/jobs/{job_id}", headers=auth)  # finished: its event stream ends
        found = {"image_id": image_id, "job_id": job_id, "codec": "jpeg", "name": "time-limit"}
        missing = {"image_id": "img_nope", "job_id": "job_nope", "codec": "jpeg", "name": "nope"}
        statuses: dict[str, set[int]] = {}
        for path in get_paths(c.app):
            for ids, who in ((found, auth), (missing, auth), (found, {})):
                code = _compare(c, _fill(path, ids), who)
                statuses.setdefault(path, set()).add(code)
        # Every kind of answer was compared: found, unknown id, no key.
        assert statuses["/v1/images/{image_id}"] == {200, 404, 401}
        assert statuses["/v1/jobs/{job_id}/events"] == {200, 404, 401}
        assert statuses["/healthz"] == {200}
        # A conditional HEAD: 304 as the GET, before any work.
        etag = c.get(f"/v1/images/{image_id}/render?width=48", headers=auth).headers["etag"]
        assert _compare(c, f"/v1/images/{image_id}/render?width=48", {**auth, "If-None-Match": etag}) == 304
        assert _compare(c, f"/v1/images/{image_id}/weights", {**auth, "If-None-Match": f'"{"0" * 64}"'}) == 200
        # A route without GET: HEAD is refused as GET is, naming what it allows.
        r = c.head("/v1/blobs", headers=auth)
        assert r.status_code == 405 and r.content == b"" and "POST" in r.headers["allow"]


def test_head_on_a_running_event_stream_ends_at_once(tmp_path: Path, parrots_path: Path) -> None:
    """The job stays queued (no worker): a GET would stream until it ends; a HEAD answers with the headers."""
    with live_api(Settings(data_dir=tmp_path, render_compile=False)) as c:
        job_id = c.post("/v1/images?steps=20", content=parrots_path.read_bytes(),
                        headers={"content-type": "image/png"}).json()["job_id"]
        r = c.head(f"/v1/jobs/{job_id}/events", timeout=5)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.content == b""
