"""Blob storage behind one small interface: the local filesystem (sharded, atomic writes) or any
S3-compatible store (boto3; MinIO in compose). Weight blobs and uploads are content-addressed by their
SHA-256, so writing the same bytes twice is harmless; renders are keyed by their cache key. The local store
also lists namespaces with sizes and mtimes and refreshes mtimes, which the sweeper (service/sweeper.py)
uses to bound the render cache (LRU) and to drop old uploads.

Over 300 lines: two stores behind one interface, each with listing, guarded and by-prefix deletes and the
sweeping of leftovers; splitting them would scatter one protocol over several files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .settings import Settings

_KEY = re.compile(r"^[a-z]+/[0-9a-f]{16,64}$")
_NAME = re.compile(r"^[0-9a-f]{16,64}$")
_NAMESPACE = re.compile(r"^[a-z]+$")


class BlobNotFound(KeyError):
    pass


class StorageError(RuntimeError):
    pass


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    mtime: float  # last write or touch, Unix seconds


class BlobStore(Protocol):
    # True where listing a namespace and refreshing an mtime are cheap local calls, so the sweeper may
    # bound the store itself; False for S3, which a bucket lifecycle rule bounds instead (docs/SERVICE.md).
    lists_cheaply: bool

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def ping(self) -> None: ...
    def list(self, namespace: str) -> Iterator[BlobInfo]: ...
    def touch(self, key: str) -> bool: ...
    def delete_unless_newer(self, key: str, than: float) -> bool: ...
    def delete_prefix(self, namespace: str, prefix: str) -> int: ...
    def sweep_temp(self, older_than: float) -> int: ...


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_content(store: BlobStore, namespace: str, data: bytes) -> str:
    """Store `data` under `namespace/<sha256>` and return the digest. When present it is only touched, so a
    repeated upload counts as recent and the sweeper keeps it."""
    d = digest(data)
    key = f"{namespace}/{d}"
    if not store.touch(key):
        store.put(key, data)
    return d


def ensure_content(store: BlobStore, namespace: str, data: bytes) -> str:
    """Like `put_content`, for the moment a record starts referencing the blob: called while the blob's lock
    is held (service/records/images.py), it writes the bytes again if a delete removed them meanwhile."""
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


def _check_namespace(namespace: str) -> str:
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"bad blob namespace {namespace!r}")
    return namespace


class LocalBlobStore:
    """`root/<namespace>/<ab>/<abcdef...>`; a write goes to a temporary file in the same directory and is
    renamed into place, so a reader never sees half a blob and a crashed writer leaves no partial key.
    Deleting a blob another thread is reading is safe: a read opens the file first, and a missing file is
    BlobNotFound."""

    lists_cheaply = True

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

    def list(self, namespace: str) -> Iterator[BlobInfo]:
        """Every blob in `namespace` with its size and mtime, in no order. Temporary and set-aside files
        (dot names) are not blobs; a file deleted while we walk is skipped."""
        base = self.root / _check_namespace(namespace)
        for shard in _scan(base):
            if not shard.is_dir(follow_symlinks=False):
                continue
            for entry in _scan(Path(shard.path)):
                if not _NAME.match(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield BlobInfo(f"{namespace}/{entry.name}", st.st_size, st.st_mtime)

    def touch(self, key: str) -> bool:
        """Sets the mtime to now (recency for the sweeper); False when the blob is missing."""
        try:
            os.utime(self._path(key))
        except FileNotFoundError:
            return False
        return True

    def delete_unless_newer(self, key: str, than: float) -> bool:
        """Deletes the blob unless it was written or touched after `than` (a concurrent put or touch wins).
        The file is first renamed aside, which a later touch can't refresh, and only then is its mtime
        checked, so a put or touch that raced the check either shows in the mtime (the file goes back)
        or found the key gone and wrote it again. Returns whether it was deleted."""
        path = self._path(key)
        aside = path.with_name(f".del-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if aside.stat().st_mtime > than:
            os.replace(aside, path)  # a concurrent put of the same key holds the same bytes
            return False
        aside.unlink()
        return True


    def delete_prefix(self, namespace: str, prefix: str) -> int:
        """Deletes every blob of `namespace` whose name starts with `prefix` (at least 2 hex digits: they all
        live in one shard). Returns how many."""
        if not _NAME.match(prefix.ljust(16, "0")):
            raise ValueError(f"bad blob prefix {prefix!r}")
        n = 0
        for entry in _scan(self.root / _check_namespace(namespace) / prefix[:2]):
            if _NAME.match(entry.name) and entry.name.startswith(prefix):
                Path(entry.path).unlink(missing_ok=True)
                n += 1
        return n

    def sweep_temp(self, older_than: float) -> int:
        """Deletes what crashed writers and deleters left: temporary (`.tmp-`) and set-aside (`.del-`) files
        not touched since `older_than`. Returns how many."""
        n = 0
        for ns in _scan(self.root):
            if not ns.is_dir(follow_symlinks=False):
                continue
            for shard in _scan(Path(ns.path)):
                if not shard.is_dir(follow_symlinks=False):
                    continue
                for entry in _scan(Path(shard.path)):
                    if entry.name.startswith((".tmp-", ".del-")):
                        try:
                            if entry.stat(follow_symlinks=False).st_mtime < older_than:
                                Path(entry.path).unlink()
                                n += 1
                        except FileNotFoundError:
                            continue
        return n


def _scan(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


class S3BlobStore:
    """No sweeping here: listing a bucket is paged and billed per request, and an object's LastModified can
    only be refreshed by copying it, so `touch` only reports existence. A lifecycle rule on the bucket
    bounds `renders/` (docs/SERVICE.md)."""

    lists_cheaply = False

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

    def list(self, namespace: str) -> Iterator[BlobInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{self.prefix}{_check_namespace(namespace)}/"
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix):]
                if _NAME.match(name):
                    yield BlobInfo(f"{namespace}/{name}", obj["Size"], obj["LastModified"].timestamp())

    def touch(self, key: str) -> bool:
        # Refreshing LastModified would mean copying the object onto itself; the lifecycle rule expires by
        # age instead, so this only answers whether the key exists.
        return self.exists(key)

    def delete_unless_newer(self, key: str, than: float) -> bool:
        raise NotImplementedError("S3 stores are not swept: bound them with a bucket lifecycle rule")

    def delete_prefix(self, namespace: str, prefix: str) -> int:
        """Deletes every object of `namespace` whose name starts with `prefix` (one listing by prefix)."""
        if not _NAME.match(prefix.ljust(16, "0")):
            raise ValueError(f"bad blob prefix {prefix!r}")
        full = f"{self.prefix}{_check_namespace(namespace)}/{prefix}"
        n = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])
                n += 1
        return n

    def sweep_temp(self, older_than: float) -> int:
        return 0  # a PUT is atomic in S3: nothing half-written is left behind

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
