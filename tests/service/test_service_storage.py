"""Blob stores: the local one (content addressing, atomic writes, strict keys) and the S3 one against moto
in server mode on loopback (a real HTTP S3 endpoint, boto3 unpatched)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings
from service.storage import BlobNotFound, LocalBlobStore, S3BlobStore, digest, make_store, put_content


def _exercise(store) -> None:  # noqa: ANN001
    data = b"weights" * 100
    d = put_content(store, "blobs", data)
    assert d == digest(data) and store.exists(f"blobs/{d}") and store.get(f"blobs/{d}") == data
    assert put_content(store, "blobs", data) == d  # idempotent
    missing = "blobs/" + "0" * 64
    assert not store.exists(missing)
    with pytest.raises(BlobNotFound):
        store.get(missing)
    store.delete(f"blobs/{d}")
    assert not store.exists(f"blobs/{d}")
    store.delete(f"blobs/{d}")  # deleting twice is fine
    for bad in ("../etc/passwd", "blobs/../../x", "blobs/ABC", "blobs"):
        with pytest.raises(ValueError):
            store.get(bad)
    store.ping()


def test_local_store(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    _exercise(store)
    d = put_content(store, "uploads", b"x")
    path = tmp_path / "uploads" / d[:2] / d
    assert path.read_bytes() == b"x"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]  # no temporary left behind


def test_local_store_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)
    key = "blobs/" + "a" * 64

    def boom(*_a, **_k):  # noqa: ANN002, ANN003
        raise OSError("disk full")

    monkeypatch.setattr("service.storage.os.replace", boom)
    with pytest.raises(OSError):
        store.put(key, b"data")
    assert not store.exists(key)
    assert not list((tmp_path / "blobs" / "aa").iterdir())


def test_s3_store_against_moto_server(moto_endpoint: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, storage="s3", s3_bucket="tuner-test", s3_endpoint_url=moto_endpoint,
                        s3_access_key_id="test", s3_secret_access_key="test", s3_prefix="svc")
    store = make_store(settings)
    assert isinstance(store, S3BlobStore)
    _exercise(store)
    d = put_content(store, "blobs", b"abc")
    keys = [o["Key"] for o in store.client.list_objects_v2(Bucket="tuner-test")["Contents"]]
    assert keys == [f"svc/blobs/{d}"]


def test_s3_unreachable_fails_ping(tmp_path: Path) -> None:
    pytest.importorskip("boto3")
    store = S3BlobStore("nope", endpoint_url="http://127.0.0.1:1", region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="y")
    with pytest.raises(Exception, match="not reachable"):
        store.ping()


def test_api_on_s3_storage(moto_endpoint: str, tmp_path: Path, parrots) -> None:  # noqa: ANN001
    """The API with blobs in S3: upload a blob, render at 2×, and the render lands in the S3 render cache."""
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from service.api.app import create_app
    from tuner_model.rate.encode import encode
    from tuner_model.rate.request import EncodeSettings

    _, blob = encode(parrots, EncodeSettings(steps=30, device="cpu"))
    settings = Settings(data_dir=tmp_path, storage="s3", s3_bucket="tuner-api", s3_endpoint_url=moto_endpoint,
                        s3_access_key_id="test", s3_secret_access_key="test")
    with TestClient(create_app(settings)) as c:
        assert c.get("/readyz").json()["checks"]["storage"] == "ok"
        img = c.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream"}).json()
        r = c.get(f"/v1/images/{img['image_id']}/render?width=192")
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (192, 128)
        assert c.get(f"/v1/images/{img['image_id']}/weights").content == blob
        store = c.app.state.store
        keys = {o["Key"].split("/")[0] for o in store.client.list_objects_v2(Bucket="tuner-api")["Contents"]}
        assert keys == {"blobs", "renders"}
