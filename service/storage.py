"""Blob storage behind one small interface: the local filesystem (sharded, atomic writes) or any
S3-compatible store (boto3; MinIO in compose). Weight blobs and uploads are content-addressed by their
SHA-256, so writing the same bytes twice is harmless; renders are keyed by their cache key."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from .settings import Settings

_KEY = re.compile(r"^[a-z]+/[0-9a-f]{16,64}$")


class BlobNotFound(KeyError):
    pass


class StorageError(RuntimeError):
    pass


class BlobStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def ping(self) -> None: ...


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_content(store: BlobStore, namespace: str, data: bytes) -> str:
    """Store `data` under `namespace/<sha256>` (skipped when present) and return the digest."""
    d = digest(data)
    key = f"{namespace}/{d}"
    if not store.exists(key):
        store.put(key, data)
    return d


def _check_key(key: str) -> tuple[str, str]:
    # Keys come from our own code, but a strict shape keeps any path out of the filesystem layout.
    if not _KEY.match(key):
        raise ValueError(f"bad blob key {key!r}")
    ns, name = key.split("/")
    return ns, name


class LocalBlobStore:
    """`root/<namespace>/<ab>/<abcdef...>`; a write goes to a temporary file in the same directory and is
    renamed into place, so a reader never sees half a blob and a crashed writer leaves no partial key."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        ns, name = _check_key(key)
        return self.root / ns / name[:2] / name

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.root} is not writable")


class S3BlobStore:
    def __init__(self, bucket: str, prefix: str = "", **client_kwargs: object) -> None:
        import boto3
        from botocore.config import Config

        cfg = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 3})
        self.client = boto3.client("s3", config=cfg, **client_kwargs)
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def _k(self, key: str) -> str:
        _check_key(key)
        return self.prefix + key

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, data: bytes) -> None:
        # A PUT of one object is atomic in S3: readers see the old object, none, or the whole new one.
        self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BlobNotFound(key) from None
            raise StorageError(str(e)) from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise StorageError(str(e)) from None

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def ping(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as e:  # noqa: BLE001 - any failure means "not reachable"
            raise StorageError(f"S3 bucket {self.bucket!r} not reachable: {e}") from None


def make_store(settings: Settings) -> BlobStore:
    if settings.storage == "s3":
        kwargs: dict[str, object] = {"region_name": settings.s3_region}
        if settings.s3_endpoint_url:
            kwargs["endpoint_url"] = settings.s3_endpoint_url
        if settings.s3_access_key_id:
            kwargs["aws_access_key_id"] = settings.s3_access_key_id
            kwargs["aws_secret_access_key"] = settings.s3_secret_access_key
        store = S3BlobStore(settings.s3_bucket, settings.s3_prefix, **kwargs)
        # The store may come up later than we do; /readyz reports it meanwhile.
        with contextlib.suppress(Exception):
            store.ensure_bucket()
        return store
    return LocalBlobStore(settings.data_dir / "blobs")
