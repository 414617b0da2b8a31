"""The storage sweeper on real files and the real API (TestClient, SQLite records, local store): the render
cache is evicted least recently used first down to its cap, a cache hit refreshes recency, a cap of 0
turns the cache off; old uploads no queued or running job needs are deleted and the others kept; an upload
swept between the API's put and its job row is stored again. Passes are run directly (`sweep_once`)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pg_fixtures import postgres_url  # noqa: F401 - a fixture

from service.api.app import create_app
from service.records import CANCELLED, QUEUED, RUNNING, SUCCEEDED, Database, Job
from service.settings import Settings
from service.storage import BlobNotFound, LocalBlobStore, S3BlobStore, digest, put_content
from service.sweeper import Sweeper
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings

DAY = 86_400.0


@pytest.fixture(scope="module")
def blob(parrots: np.ndarray) -> bytes:
    _, data = encode(parrots, EncodeSettings(steps=30, device="cpu"))
    return data


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, render_compile=False, **kw)


def _age(store: LocalBlobStore, key: str, seconds_ago: float) -> None:
    path = store._path(key)
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def _render_keys(store: LocalBlobStore) -> set[str]:
    return {b.key for b in store.list("renders")}


# The store ---------------------------------------------------------------------------------------------------
def test_local_list_touch_and_guarded_delete(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    a = put_content(store, "renders", b"a" * 10)
    b = put_content(store, "renders", b"b" * 20)
    put_content(store, "uploads", b"other namespace")
    (tmp_path / "renders" / a[:2] / ".tmp-leftover").write_bytes(b"x" * 99)  # a crashed writer's file
    infos = {i.key: i for i in store.list("renders")}
    assert {k: i.size for k, i in infos.items()} == {f"renders/{a}": 10, f"renders/{b}": 20}
    assert list(store.list("blobs")) == []  # a namespace never written
    with pytest.raises(ValueError):
        list(store.list("../x"))

    _age(store, f"renders/{a}", 100)
    old = store._path(f"renders/{a}").stat().st_mtime
    assert store.touch(f"renders/{a}") and store._path(f"renders/{a}").stat().st_mtime > old + 50
    assert not store.touch("renders/" + "0" * 64)

    # A blob touched after the time given survives; one older goes; a missing one is no error.
    assert not store.delete_unless_newer(f"renders/{a}", old) and store.exists(f"renders/{a}")
    assert store.delete_unless_newer(f"renders/{a}", time.time() + 1) and not store.exists(f"renders/{a}")
    assert not store.delete_unless_newer(f"renders/{a}", time.time() + 1)
    assert not [p for p in store._path(f"renders/{b}").parent.parent.rglob(".del-*")]  # nothing set aside left


def test_put_of_an_existing_upload_refreshes_it(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    d = put_content(store, "uploads", b"bytes")
    _age(store, f"uploads/{d}", 2 * DAY)
    put_content(store, "uploads", b"bytes")
    assert time.time() - store._path(f"uploads/{d}").stat().st_mtime < 60


def test_a_blob_deleted_while_read_is_safe(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    d = put_content(store, "renders", b"r" * 1000)
    with store._path(f"renders/{d}").open("rb") as f:  # a reader that has opened it
        assert store.delete_unless_newer(f"renders/{d}", time.time() + 1)
        assert f.read() == b"r" * 1000
    with pytest.raises(BlobNotFound):
        store.get(f"renders/{d}")


# The render cache ----------------------------------------------------------------------------------------------
def test_lru_eviction_order_and_cap(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    keys = []
    for i, size in enumerate((100, 200, 300, 400)):  # written oldest first
        keys.append("renders/" + put_content(store, "renders", bytes([i]) * size))
        _age(store, keys[-1], 1000 - i * 10)
    sweeper = Sweeper(_settings(tmp_path, render_cache_max_bytes=750), store, Database(
        f"sqlite:///{tmp_path / 'tuner.sqlite'}"))
    # 1000 bytes over a 750 cap: the two least recent (100 + 200) go, leaving 700.
    result = sweeper.sweep_once()
    assert (result.renders_deleted, result.render_bytes_left) == (2, 700)
    assert _render_keys(store) == set(keys[2:])
    assert sweeper.sweep_once().renders_deleted == 0  # under the cap: nothing more
    sweeper.settings = _settings(tmp_path, render_cache_max_bytes=400)
    assert sweeper.sweep_once().render_bytes_left == 400 and _render_keys(store) == {keys[3]}


def test_a_hit_refreshes_recency(tmp_path: Path, blob: bytes) -> None:
    with TestClient(create_app(_settings(tmp_path))) as c:
        image_id = c.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream"}).json()[
            "image_id"]
        base = f"/v1/images/{image_id}/render"
        urls = [f"{base}?width={w}" for w in (40, 50, 60)]
        store: LocalBlobStore = c.app.state.store
        for i, url in enumerate(urls):  # the 40-wide render is the oldest, then 50, then 60
            before = _render_keys(store)
            assert c.get(url).headers["x-render-cache"] == "miss"
            [key] = _render_keys(store) - before
            _age(store, key, 300 - i * 100)
        assert c.get(urls[0]).headers["x-render-cache"] == "hit"  # now the most recent
        total = sum(b.size for b in store.list("renders"))
        sweeper: Sweeper = c.app.state.sweeper
        sweeper.settings = _settings(tmp_path, render_cache_max_bytes=total - 1)
        assert sweeper.sweep_once().renders_deleted == 1
        # The 50-wide render was least recently used; the 40-wide one survived thanks to its hit.
        assert [c.get(url).headers["x-render-cache"] for url in urls] == ["hit", "miss", "hit"]


def test_cap_zero_disables_the_render_cache(tmp_path: Path, blob: bytes) -> None:
    with TestClient(create_app(_settings(tmp_path))) as c:  # a cache filled before the cap went to 0
        image_id = c.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream"}).json()[
            "image_id"]
        assert c.get(f"/v1/images/{image_id}/render?width=40").status_code == 200
    with TestClient(create_app(_settings(tmp_path, render_cache_max_bytes=0))) as c:
        store: LocalBlobStore = c.app.state.store
        url = f"/v1/images/{image_id}/render?width=40"
        assert len(_render_keys(store)) == 1
        first, second = c.get(url), c.get(url)
        assert first.status_code == second.status_code == 200 and first.content == second.content
        assert [first.headers["x-render-cache"], second.headers["x-render-cache"]] == ["miss", "miss"]
        assert c.get(f"/v1/images/{image_id}/render?width=70").headers["x-render-cache"] == "miss"
        assert len(_render_keys(store)) == 1  # nothing new stored
        assert c.app.state.sweeper.sweep_once().renders_deleted == 1 and not _render_keys(store)


# Uploads -------------------------------------------------------------------------------------------------------
def _png(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, "PNG")
    return buf.getvalue()


def _post(c: TestClient, data: bytes) -> dict:
    r = c.post("/v1/images?steps=30", content=data, headers={"content-type": "image/png"})
    assert r.status_code == 202, r.text
    return r.json()


def test_old_uploads_without_an_active_job_are_deleted(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path))) as c:
        store: LocalBlobStore = c.app.state.store
        queued, cancelled, young = _png((200, 0, 0)), _png((0, 200, 0)), _png((0, 0, 200))
        _post(c, queued)
        job = _post(c, cancelled)
        assert c.delete(f"/v1/jobs/{job['job_id']}").json()["status"] == "cancelled"
        put_content(store, "uploads", young)  # unreferenced but within the retention
        orphan = put_content(store, "uploads", b"an upload whose job row is long gone")
        for data in (queued, cancelled):
            _age(store, f"uploads/{digest(data)}", 2 * DAY)
        _age(store, f"uploads/{orphan}", 2 * DAY)

        assert c.app.state.sweeper.sweep_once().uploads_deleted == 2
        left = {b.key for b in store.list("uploads")}
        assert left == {f"uploads/{digest(queued)}", f"uploads/{digest(young)}"}
        # The queued job's upload is still readable, as its worker will need.
        assert store.get(f"uploads/{digest(queued)}") == queued


def test_an_upload_swept_before_its_job_row_is_stored_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race: an identical upload of an old, unreferenced file. The sweeper runs between the API's put
    (which only refreshed the file) and the job insert, and deletes it; the API puts the bytes back."""
    with TestClient(create_app(_settings(tmp_path))) as c:
        store: LocalBlobStore = c.app.state.store
        db: Database = c.app.state.db
        data = _png((10, 20, 30))
        first = _post(c, data)
        c.delete(f"/v1/jobs/{first['job_id']}")
        key = f"uploads/{digest(data)}"
        _age(store, key, 2 * DAY)
        swept: list[int] = []
        add_job = db.add_job_admitted  # the job row's insert, after its admission re-check

        def add_job_after_a_sweep(job: Job, *args: object) -> Job:
            _age(store, key, 2 * DAY)  # as the sweeper saw it when it listed, before the API's touch
            swept.append(c.app.state.sweeper.sweep_once().uploads_deleted)
            assert not store.exists(key)
            return add_job(job, *args)

        monkeypatch.setattr(db, "add_job_admitted", add_job_after_a_sweep)
        second = _post(c, data)
        assert swept == [1] and second["job_id"] != first["job_id"] and not second["deduplicated"]
        assert store.get(key) == data
        monkeypatch.setattr(db, "add_job_admitted", add_job)
        _age(store, key, 2 * DAY)
        assert c.app.state.sweeper.sweep_once().uploads_deleted == 0  # its queued job keeps it


def test_the_thread_sweeps_on_its_interval(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path, cache_sweep_interval_s=0.05))) as c:
        store: LocalBlobStore = c.app.state.store
        key = "uploads/" + put_content(store, "uploads", b"stale")
        _age(store, key, 2 * DAY)
        deadline = time.time() + 10
        while store.exists(key) and time.time() < deadline:
            time.sleep(0.05)
        assert not store.exists(key)
        assert any(t.name == "storage-sweeper" for t in threading.enumerate())
    assert not any(t.name == "storage-sweeper" and t.is_alive() for t in threading.enumerate())


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.render_cache_max_bytes, s.upload_retention_s, s.cache_sweep_interval_s) == (2 * 1024**3, DAY, 60.0)
    monkeypatch.setenv("TUNER_RENDER_CACHE_MAX_BYTES", "0")
    monkeypatch.setenv("TUNER_UPLOAD_RETENTION_S", "3600")
    monkeypatch.setenv("TUNER_CACHE_SWEEP_INTERVAL_S", "5")
    s = Settings()
    assert (s.render_cache_max_bytes, s.upload_retention_s, s.cache_sweep_interval_s) == (0, 3600.0, 5.0)
    monkeypatch.setenv("TUNER_RENDER_CACHE_MAX_BYTES", "-1")
    with pytest.raises(ValueError):
        Settings()


# The records -----------------------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuner.sqlite'}"
    return request.getfixturevalue("postgres_url")


def test_active_upload_digests(db_url: str) -> None:
    db = Database(db_url)
    by_status = {}
    for status in (QUEUED, RUNNING, SUCCEEDED, CANCELLED, QUEUED):
        d = uuid.uuid4().hex * 2
        by_status.setdefault(status, set()).add(d)
        db.add_job(Job(id="job_" + uuid.uuid4().hex, image_id="img_x", status=status, progress=0.0, step=0,
                       params={}, upload_digest=d, attempts=0, cancel_requested=0, created_at=time.time()))
    assert db.active_upload_digests() == by_status[QUEUED] | by_status[RUNNING]


# S3 -------------------------------------------------------------------------------------------------------------
def test_s3_is_left_to_its_lifecycle_rule(moto_endpoint: str, tmp_path: Path) -> None:
    store = S3BlobStore("tuner-sweep", prefix="p", endpoint_url=moto_endpoint,
                        region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
    store.ensure_bucket()
    d = put_content(store, "renders", b"x" * 123)
    put_content(store, "uploads", b"y")
    [info] = store.list("renders")
    assert (info.key, info.size) == (f"renders/{d}", 123) and abs(info.mtime - time.time()) < 600
    assert store.touch(f"renders/{d}") and not store.touch("renders/" + "0" * 64)
    with pytest.raises(NotImplementedError):
        store.delete_unless_newer(f"renders/{d}", time.time())
    sweeper = Sweeper(_settings(tmp_path, render_cache_max_bytes=0), store,
                      Database(f"sqlite:///{tmp_path / 'tuner.sqlite'}"))
    assert not sweeper.enabled and sweeper.sweep_once().renders_deleted == 0
    sweeper.start()
    assert sweeper._thread is None and store.exists(f"renders/{d}")


def test_leftovers_are_swept(tmp_path: Path) -> None:
    """Issue 24, item 13: a crashed writer's temporary file and a blob no image references (a job that failed
    after writing it) go once older than TUNER_ORPHAN_GRACE_S; a referenced blob and a fresh one stay."""

    from service.records import Image

    settings = _settings(tmp_path, orphan_grace_s=60)
    store = LocalBlobStore(tmp_path / "blobs")
    db = Database(settings.resolved_database_url)
    kept, orphan, fresh = (put_content(store, "blobs", bytes([i]) * 100) for i in (1, 2, 3))
    row = Image(id="img_kept", tenant="local", width=8, height=8, channels=3, bytes=100, bpp=1.0, psnr=None,
                parameters=10, params={}, blob_digest=kept, source="upload", job_id=None, created_at=time.time())
    db.add_image_with_blob(row, lambda d: None)
    for key in (f"blobs/{kept}", f"blobs/{orphan}"):
        _age(store, key, 600)
    tmp = store._path(f"blobs/{kept}").with_name(".tmp-crashed")
    tmp.write_bytes(b"half")
    os.utime(tmp, (time.time() - 600, time.time() - 600))
    result = Sweeper(settings, store, db).sweep_once()
    assert result.leftovers_deleted == 2
    assert store.exists(f"blobs/{kept}") and store.exists(f"blobs/{fresh}") and not store.exists(f"blobs/{orphan}")
    assert not tmp.exists()


def test_stray_tiles_of_ended_jobs_are_deleted_and_a_running_jobs_kept(tmp_path: Path) -> None:
    """Issue 28: a tiled job that failed or was cancelled leaves its fitted tiles' payloads; once older than
    the grace period they go, while a running tiled job's stay whatever their age."""
    settings = _settings(tmp_path)
    store, db = LocalBlobStore(tmp_path / "blobs"), Database(f"sqlite:///{tmp_path / 'r.sqlite'}")
    ids = {}
    for status in (RUNNING, CANCELLED):
        ids[status] = "job_" + uuid.uuid4().hex
        db.add_job(Job(id=ids[status], image_id="img_x", status=status, params={}, upload_digest="0" * 64,
                       created_at=time.time(), tiles=2))
    keys = {status: [f"tiles/{job_id[4:]}{k:04x}" for k in range(2)] for status, job_id in ids.items()}
    for key in keys[RUNNING] + keys[CANCELLED]:
        store.put(key, b"a tile")
        _age(store, key, 2 * settings.orphan_grace_s)
    store.put(f"tiles/{uuid.uuid4().hex}0000", b"young, its job unknown")
    assert Sweeper(settings, store, db).sweep_leftovers() == 2
    assert {b.key for b in store.list("tiles")} - set(keys[RUNNING]) != set()  # the young one stays
    for key in keys[RUNNING]:
        assert store.get(key) == b"a tile"
    for key in keys[CANCELLED]:
        with pytest.raises(BlobNotFound):
            store.get(key)
