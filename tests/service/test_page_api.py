"""What the web page asks the API for, in process: the estimate before Encode (GET /v1/estimate, the same
figure and verdict as the admission), the caller's running jobs after a reload (GET /v1/jobs), the names
uploads came with, and whether an original is still kept (so the page offers only what exists)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.access.keys import create_key
from service.api.app import create_app
from service.api.uploads import upload_name
from service.estimate import estimate_fit_seconds, job_plan
from service.records import Database
from service.settings import Settings
from tuner_model.core.tiling import tile_grid
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeRequest, EncodeSettings

PNG = {"content-type": "image/png"}


@pytest.fixture()
def client(tmp_path: Path):
    with TestClient(create_app(Settings(data_dir=tmp_path, render_compile=False, rate_limit_per_s=0))) as c:
        yield c


def test_the_estimate_is_the_admissions(client: TestClient, parrots_path: Path) -> None:
    settings = client.app.state.settings
    e = client.get("/v1/estimate", params={"width": 768, "height": 512, "effort": 2}).json()
    plan = job_plan(EncodeRequest(effort=2), 768, 512, 3, settings)
    assert e["seconds"] == pytest.approx(estimate_fit_seconds(plan, settings), 0.01)
    assert e["admitted"] and e["detail"] is None and e["steps"] > 0
    # A large photo is admitted as tiles (issue 28): each tile's task fits the time limit.
    big = client.get("/v1/estimate", params={"width": 3000, "height": 2000}).json()
    assert big["admitted"] and big["tiles"] == tile_grid(3000, 2000).count > 1 and big["workers"] >= 1, big
    # At an effort whose one tile would not, it is refused, and the detail names an effort that would fit.
    slow = client.get("/v1/estimate", params={"width": 3000, "height": 2000, "effort": 9}).json()
    assert not slow["admitted"] and "time limit" in slow["detail"] and "effort 5 would take" in slow["detail"]
    # The same verdict as the upload itself gets: a tiny time limit refuses both.
    with TestClient(create_app(Settings(data_dir=settings.data_dir / "b", soft_time_limit_s=6,
                                        render_compile=False))) as tight:
        verdict = tight.get("/v1/estimate", params={"width": 96, "height": 64, "effort": 1}).json()
        refused = tight.post("/v1/images?effort=1", content=parrots_path.read_bytes(), headers=PNG).json()
        assert not verdict["admitted"] and verdict["detail"] == refused["detail"]
    bad = client.get("/v1/estimate", params={"width": 96, "height": 64, "bpp": 1, "psnr": 30})
    assert bad.status_code == 422 and bad.json()["type"] == "/problems/validation"
    assert client.get("/v1/estimate", params={"width": 96}).status_code == 422  # height missing


def test_the_callers_running_jobs(tmp_path: Path, parrots_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, render_compile=False, rate_limit_per_s=0)
    db = Database(settings.resolved_database_url)
    keys = {t: {"Authorization": f"Bearer {create_key(db, t)[1]}"} for t in ("alice", "bob")}
    with TestClient(create_app(settings)) as c:
        first = c.post("/v1/images?steps=20", content=parrots_path.read_bytes(), headers={**PNG, **keys["alice"]})
        second = c.post("/v1/images?steps=21", content=parrots_path.read_bytes(), headers={**PNG, **keys["alice"]})
        c.delete(f"/v1/jobs/{first.json()['job_id']}", headers=keys["alice"])
        active = c.get("/v1/jobs", headers=keys["alice"]).json()["items"]
        assert [j["job_id"] for j in active] == [second.json()["job_id"]]  # newest first, active only
        every = c.get("/v1/jobs?status=active,cancelled", headers=keys["alice"]).json()["items"]
        assert {j["status"] for j in every} == {"queued", "cancelled"}
        assert c.get("/v1/jobs", headers=keys["bob"]).json()["items"] == []  # another tenant's: none
        assert c.get("/v1/jobs?status=done", headers=keys["alice"]).status_code == 422
        assert c.get("/v1/jobs").status_code == 401


def test_uploads_keep_their_names(client: TestClient, parrots: np.ndarray, parrots_path: Path) -> None:
    blob = encode(parrots, EncodeSettings(steps=10, device="cpu", effort=1))[1]
    named = client.post("/v1/blobs", files={"file": ("holiday/parrots.tnr", blob)}).json()
    assert named["name"] == "parrots.tnr"
    other = encode(parrots[:32], EncodeSettings(steps=10, device="cpu", effort=1))[1]
    raw = client.post("/v1/blobs?name=from%20the%20query", content=other,
                      headers={"content-type": "application/octet-stream"}).json()
    assert raw["name"] == "from the query"
    assert client.get(f"/v1/images/{raw['image_id']}").json()["name"] == "from the query"
    job = client.post("/v1/images?steps=20", files={"file": ("p.png", parrots_path.read_bytes(), "image/png")})
    assert job.status_code == 202
    stored = client.app.state.db.get_job(job.json()["job_id"])
    assert stored.name == "p.png"  # the worker copies it onto the image it makes
    assert upload_name(None, "C:\\photos\\a\x00b.png") == "ab.png" and upload_name("", None) is None
    assert upload_name("x" * 500) == "x" * 200


def test_the_original_is_offered_only_while_kept(client: TestClient, parrots: np.ndarray) -> None:
    blob = encode(parrots, EncodeSettings(steps=10, device="cpu", effort=1))[1]
    image_id = client.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream"}).json()[
        "image_id"]
    assert client.get(f"/v1/images/{image_id}/comparisons").json()["original"] is None
    assert client.get(f"/v1/images/{image_id}/original").status_code == 404
