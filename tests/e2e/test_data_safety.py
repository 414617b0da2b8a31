"""Issue 24, item 1: one tenant's delete must never take a content-addressed blob another tenant's image
needs. Real `tuner api` and `tuner worker` processes on real Redis, on the local store and on S3 (moto's
server on loopback). The race is made deterministic with the pause points of service/testhooks.py: the
worker (or the API, for POST /v1/blobs) is held between storing the blob and writing the image row while the
other tenant deletes its image of the same bytes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from test_service_e2e import FAST, Proc, free_port, wait_ready

from service.access.keys import create_key
from service.records import Database
from service.settings import Settings
from service.storage import BlobStore, LocalBlobStore, S3BlobStore


def _wait_file(path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} did not appear in {timeout}s")
        time.sleep(0.05)


@pytest.fixture(params=["local", "s3"])
def two_tenants(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path):
    """API + one worker on `local` or `s3` storage, two tenants' auth headers, the store, the pause dir."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    data, pause = tmp_path / "data", tmp_path / "pause"
    pause.mkdir()
    data.mkdir()
    env = {**FAST, "TUNER_BROKER_URL": redis_url, "TUNER_DATA_DIR": str(data), "TUNER_COMPARISONS": "0",
           "TUNER_TEST_PAUSE_DIR": str(pause), "TUNER_RATE_LIMIT_PER_S": "0"}
    store: BlobStore
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        bucket = f"race-{tmp_path.name.lower().replace('_', '-')[-40:]}"
        env.update({"TUNER_STORAGE": "s3", "TUNER_S3_ENDPOINT_URL": endpoint, "TUNER_S3_BUCKET": bucket,
                    "TUNER_S3_ACCESS_KEY_ID": "test", "TUNER_S3_SECRET_ACCESS_KEY": "test"})
        s3 = S3BlobStore(bucket, endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                         region_name="us-east-1")
        s3.ensure_bucket()
        store = s3
    else:
        store = LocalBlobStore(data / "blobs")
    db = Database(Settings(data_dir=data).resolved_database_url)
    auth = {t: {"Authorization": f"Bearer {create_key(db, t)[1]}"} for t in ("alice", "bob")}
    port = free_port()
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    worker = Proc(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, api)
        yield base, auth, store, pause
    finally:
        api.stop()
        worker.kill()
        worker.stop()


def _fit(base: str, auth: dict[str, str], png: bytes) -> dict:
    r = httpx.post(f"{base}/v1/images", params={"steps": 30}, headers=auth, timeout=30,
                   files={"file": ("p.png", png, "image/png")})
    assert r.status_code == 202, r.text
    return r.json()


def _job_done(base: str, auth: dict[str, str], job_id: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/v1/jobs/{job_id}", headers=auth, timeout=5).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job_id} did not finish")


def test_delete_racing_a_fit_of_the_same_bytes_loses_nothing(two_tenants, parrots_path: Path) -> None:
    base, auth, store, pause = two_tenants
    png = parrots_path.read_bytes()
    a = _fit(base, auth["alice"], png)
    assert _job_done(base, auth["alice"], a["job_id"])["status"] == "succeeded"
    weights = httpx.get(f"{base}/v1/images/{a['image_id']}/weights", headers=auth["alice"])
    key = "blobs/" + weights.headers["etag"].strip('"')
    assert store.exists(key)

    (pause / "worker-before-image-row").touch()  # bob's fit stops between its blob and its image row
    b = _fit(base, auth["bob"], png)
    assert b["image_id"] != a["image_id"] and not b["deduplicated"]
    _wait_file(pause / "worker-before-image-row.held")
    assert httpx.delete(f"{base}/v1/images/{a['image_id']}", headers=auth["alice"]).status_code == 204
    (pause / "worker-before-image-row.go").touch()

    assert _job_done(base, auth["bob"], b["job_id"])["status"] == "succeeded"
    w = httpx.get(f"{base}/v1/images/{b['image_id']}/weights", headers=auth["bob"], timeout=10)
    assert w.status_code == 200, w.text
    r = httpx.get(f"{base}/v1/images/{b['image_id']}/render", params={"width": 48}, headers=auth["bob"], timeout=60)
    assert r.status_code == 200, r.text
    assert store.exists(key)
    # The last reference gone, the blob goes too: nothing is left unreferenced.
    assert httpx.delete(f"{base}/v1/images/{b['image_id']}", headers=auth["bob"]).status_code == 204
    assert not store.exists(key)


def test_delete_racing_a_blob_upload_of_the_same_bytes_loses_nothing(two_tenants, parrots_path: Path) -> None:
    base, auth, store, pause = two_tenants
    a = _fit(base, auth["alice"], parrots_path.read_bytes())
    assert _job_done(base, auth["alice"], a["job_id"])["status"] == "succeeded"
    blob = httpx.get(f"{base}/v1/images/{a['image_id']}/weights", headers=auth["alice"]).content

    (pause / "api-before-image-row").touch()
    answer: dict[str, httpx.Response] = {}

    def upload() -> None:
        answer["r"] = httpx.post(f"{base}/v1/blobs", content=blob, timeout=120,
                                 headers={"content-type": "application/octet-stream", **auth["bob"]})

    t = threading.Thread(target=upload)
    t.start()
    _wait_file(pause / "api-before-image-row.held")
    assert httpx.delete(f"{base}/v1/images/{a['image_id']}", headers=auth["alice"]).status_code == 204
    (pause / "api-before-image-row.go").touch()
    t.join(60)
    assert answer["r"].status_code == 201, answer["r"].text
    image_id = answer["r"].json()["image_id"]
    w = httpx.get(f"{base}/v1/images/{image_id}/weights", headers=auth["bob"], timeout=10)
    assert w.status_code == 200 and w.content == blob


def test_delete_takes_everything_with_it(two_tenants, parrots_path: Path) -> None:
    """Issue 24, item 13: a delete removes the blob (once no image has it), the cached renders and the
    original (once no job keeps it), and marks the job; another tenant's image of the same bytes keeps all."""
    base, auth, store, _ = two_tenants
    png = parrots_path.read_bytes()
    a, b = _fit(base, auth["alice"], png), _fit(base, auth["bob"], png)
    for who, job in (("alice", a), ("bob", b)):
        assert _job_done(base, auth[who], job["job_id"])["status"] == "succeeded"
    assert httpx.get(f"{base}/v1/images/{a['image_id']}/render?width=40", headers=auth["alice"]).status_code == 200
    assert len(list(store.list("renders"))) == 1
    assert httpx.get(f"{base}/v1/images/{a['image_id']}/original", headers=auth["alice"]).status_code == 200

    assert httpx.delete(f"{base}/v1/images/{a['image_id']}", headers=auth["alice"]).status_code == 204
    job = httpx.get(f"{base}/v1/jobs/{a['job_id']}", headers=auth["alice"]).json()
    assert job["image_deleted_at"] and job["links"].get("image") is None
    assert list(store.list("renders")) == []
    assert len(list(store.list("uploads"))) == 1  # bob's job keeps the original of the same bytes
    assert httpx.get(f"{base}/v1/images/{b['image_id']}/original", headers=auth["bob"]).status_code == 200
    assert len(list(store.list("blobs"))) == 1

    assert httpx.delete(f"{base}/v1/images/{b['image_id']}", headers=auth["bob"]).status_code == 204
    assert list(store.list("uploads")) == [] and list(store.list("blobs")) == []
