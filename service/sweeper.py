"""Bounds what the API stores: the render cache to `render_cache_max_bytes` (least recently used first;
a cache hit refreshes a render's mtime) and uploads to those a queued or running job still needs or that
are younger than `upload_retention_s`. One pass every `cache_sweep_interval_s` on a daemon thread; stores
that can't list cheaply (S3) are left to a bucket lifecycle rule."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.records import Database
from service.settings import Settings
from service.storage import BlobStore

log = logging.getLogger("tuner.sweeper")


@dataclass(frozen=True)
class SweepResult:
    renders_deleted: int = 0
    render_bytes_left: int = 0
    uploads_deleted: int = 0
    leftovers_deleted: int = 0  # temporary files of crashed writers, blobs no image references, stray tiles


class Sweeper:
    def __init__(self, settings: Settings, store: BlobStore, db: Database,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.db = db
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(getattr(self.store, "lists_cheaply", False))

    def sweep_once(self) -> SweepResult:
        """One pass over renders/ then uploads/. Safe to run in several API processes at once: a blob
        already gone is skipped, and one refreshed meanwhile is kept."""
        if not self.enabled:
            return SweepResult()
        deleted, left = self.sweep_renders()
        return SweepResult(deleted, left, self.sweep_uploads(), self.sweep_leftovers())

    def sweep_renders(self) -> tuple[int, int]:
        """Deletes the least recently used renders until their total is at most the cap. Returns how many
        were deleted and the bytes left."""
        renders = sorted(self.store.list("renders"), key=lambda b: b.mtime)
        total = sum(b.size for b in renders)
        deleted = 0
        for blob in renders:
            if total <= self.settings.render_cache_max_bytes:
                break
            # A hit since the listing moved it to the recent end: keep it and count it in the total.
            if self.store.delete_unless_newer(blob.key, blob.mtime):
                total -= blob.size
                deleted += 1
        return deleted, total

    def sweep_uploads(self) -> int:
        """Deletes uploads older than the retention that no queued or running job references."""
        cutoff = self.clock() - self.settings.upload_retention_s
        old = [b for b in self.store.list("uploads") if b.mtime <= cutoff]
        if not old:
            return 0
        needed = self.db.active_upload_digests()
        # delete_unless_newer re-checks the mtime after taking the file aside: an identical upload that
        # touched it since the listing keeps it (and the API re-puts one that vanished before its job row).
        return sum(self.store.delete_unless_newer(b.key, cutoff) for b in old
                   if b.key.split("/", 1)[1] not in needed)

    def sweep_leftovers(self) -> int:
        """Deletes what no record will ever reference, once older than `orphan_grace_s`: temporary files a
        crashed writer left, and blobs no image references (a job that failed after writing its blob; a
        worker between its blob and its row touched it recently, and re-stores it if it goes anyway). Each
        blob is dropped under its lock, after checking again that no image references it."""
        cutoff = self.clock() - self.settings.orphan_grace_s
        n = self.store.sweep_temp(cutoff) + self.sweep_tiles(cutoff)
        old = [b for b in self.store.list("blobs") if b.mtime <= cutoff]
        if not old:
            return n
        referenced = self.db.referenced_blobs()
        for blob in old:
            digest = blob.key.split("/", 1)[1]
            if digest not in referenced:
                n += self.db.drop_blob_if_unreferenced(
                    digest, lambda d: self.store.delete_unless_newer(f"blobs/{d}", cutoff))
        return n

    def sweep_tiles(self, cutoff: float) -> int:
        """Deletes fitted tiles' payloads older than `cutoff` whose job is no longer running (a tiled job that
        failed or was cancelled; a succeeded one deleted its own). A key is the job's hex id and the tile's
        four hex digits (worker/tiles.py)."""
        old = [b for b in self.store.list("tiles") if b.mtime <= cutoff]
        running = self.db.running_tiled_jobs() if old else set()
        return sum(self.store.delete_unless_newer(b.key, cutoff) for b in old
                   if "job_" + b.key.split("/", 1)[1][:-4] not in running)

    def start(self) -> None:
        if not self.enabled:
            log.info("storage sweeper off: this store is bounded by its own lifecycle rules")
            return
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="storage-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.settings.cache_sweep_interval_s):
            try:
                result = self.sweep_once()
            except Exception:  # noqa: BLE001 - a failed pass (disk, database) must not end the thread
                log.warning("storage sweep failed", exc_info=True)
                continue
            if result.renders_deleted or result.uploads_deleted or result.leftovers_deleted:
                log.info("swept %d renders (%d bytes left), %d uploads and %d leftovers", result.renders_deleted,
                         result.render_bytes_left, result.uploads_deleted, result.leftovers_deleted)
