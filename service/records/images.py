"""Queries of finished images."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.records.engine import Records
from service.records.states import ACTIVE
from service.records.tables import BlobLock, Image, Job


class ImageRecords(Records):
    def get_image(self, image_id: str) -> Image | None:
        with self.session() as s:
            return s.get(Image, image_id)

    def add_image(self, image: Image) -> Image:
        """Insert unless present (a re-run or a second upload of the same blob keeps the first record)."""
        try:
            with self.session() as s:
                s.add(image)
        except IntegrityError:
            existing = self.get_image(image.id)
            assert existing is not None
            return existing
        return image

    def add_image_with_blob(self, image: Image, ensure_blob: Callable[[str], None]) -> Image:
        """Inserts `image` unless present and, in the same transaction, holding its blob's lock, calls
        `ensure_blob(digest)` (which stores the blob if it is missing). A concurrent `delete_image_and_blob` of
        another image with the same blob either deleted the blob before (and `ensure_blob` writes it again) or
        sees this row: no interleaving leaves an image whose blob is gone."""
        try:
            with self.session() as s:
                _lock_blob(s, image.blob_digest)  # first: on SQLite this takes the write lock, waiting
                existing = s.get(Image, image.id)
                if existing is None:
                    s.add(image)
                    s.flush()
                ensure_blob((existing or image).blob_digest)
                return existing or image
        except IntegrityError:  # inserted meanwhile by a request that locked another digest (a re-fit)
            existing = self.get_image(image.id)
            assert existing is not None
            return existing

    def delete_image_and_blob(self, image_id: str, drop_blob: Callable[[str], None]) -> Image | None:
        """Deletes the image row and, when no other image references its blob, calls `drop_blob(digest)` in
        the same transaction, holding the blob's lock (so no writer can reference the blob between the check
        and the delete). If `drop_blob` raises, nothing is deleted. Returns the deleted row, or None."""
        found = self.get_image(image_id)
        if found is None:
            return None
        with self.session() as s:
            _lock_blob(s, found.blob_digest)
            img = s.get(Image, image_id)
            if img is None or img.blob_digest != found.blob_digest:  # deleted (or replaced) meanwhile
                return None
            s.delete(img)
            s.flush()
            if not s.scalar(select(func.count()).select_from(Image).where(Image.blob_digest == img.blob_digest)):
                drop_blob(img.blob_digest)
                s.execute(BlobLock.__table__.delete().where(BlobLock.digest == img.blob_digest))
            return img

    def drop_blob_if_unreferenced(self, blob_digest: str, drop_blob: Callable[[str], object]) -> bool:
        """The sweeper's delete of a blob no image references (a job that failed after writing it), under the
        same lock as the writers'. Returns whether it was dropped."""
        with self.session() as s:
            _lock_blob(s, blob_digest)
            if s.scalar(select(func.count()).select_from(Image).where(Image.blob_digest == blob_digest)):
                return False
            dropped = drop_blob(blob_digest)  # may answer False: e.g. the file was touched meanwhile
            s.execute(BlobLock.__table__.delete().where(BlobLock.digest == blob_digest))
            return dropped is not False

    def under_blob_lock(self, blob_digest: str, fn: Callable[[], None]) -> None:
        """Runs `fn` holding `blob_digest`'s lock (uploads are content-addressed too and take the same locks)."""
        with self.session() as s:
            _lock_blob(s, blob_digest)
            fn()

    def mark_image_deleted(self, image_id: str) -> set[str]:
        """Marks the image's jobs (their links lead nowhere now); returns their uploads' digests."""
        with self.session() as s:
            digests = set(s.scalars(select(Job.upload_digest).where(Job.image_id == image_id,
                                                                    Job.image_deleted_at.is_(None))))
            s.execute(update(Job).where(Job.image_id == image_id, Job.image_deleted_at.is_(None))
                      .values(image_deleted_at=time.time()))
            return digests

    def drop_upload_if_unused(self, upload_digest: str, since: float, drop: Callable[[str], None]) -> bool:
        """Drops an original no job still keeps it for (an active one, or one accepted since `since` whose
        image stands: another tenant's upload of the same bytes keeps it), under the upload's lock, which a
        new job's submission takes too (service/submit.py). Returns whether it was dropped."""
        with self.session() as s:
            _lock_blob(s, upload_digest)
            users = s.scalar(select(func.count()).select_from(Job).where(
                Job.upload_digest == upload_digest,
                or_(Job.status.in_(ACTIVE), and_(Job.created_at >= since, Job.image_deleted_at.is_(None)))))
            if users:
                return False
            drop(upload_digest)
            return True

    def referenced_blobs(self) -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(Image.blob_digest).distinct()))

    def delete_image(self, image_id: str) -> Image | None:
        with self.session() as s:
            img = s.get(Image, image_id)
            if img is not None:
                s.delete(img)
            return img

    def list_images(self, tenant: str, limit: int, after: tuple[float, str] | None = None) -> list[Image]:
        """A tenant's images, newest first (ties by id), starting after the (created_at, id) of `after`: a
        keyset page, stable while images are added or deleted."""
        query = select(Image).where(Image.tenant == tenant)
        if after is not None:
            t, i = after
            query = query.where(or_(Image.created_at < t, and_(Image.created_at == t, Image.id < i)))
        with self.session() as s:
            return list(s.scalars(query.order_by(Image.created_at.desc(), Image.id.desc()).limit(limit)))

    def stored_bytes(self, tenant: str, uploads_since: float | None = None) -> int:
        """What a tenant stores, which its quota counts: its images' blobs and, with `uploads_since`, the
        originals of its jobs that are active or were accepted since then (kept for the retention time), each
        distinct upload once, trailing bytes and all."""
        with self.session() as s:
            blobs = int(s.scalar(select(func.coalesce(func.sum(Image.bytes), 0)).where(Image.tenant == tenant)) or 0)
            if uploads_since is None:
                return blobs
            rows = s.execute(select(Job.upload_digest, func.max(Job.upload_bytes))
                             .where(*_kept_uploads(tenant, uploads_since)).group_by(Job.upload_digest)).all()
            return blobs + sum(int(n or 0) for _, n in rows)

    def upload_counted(self, tenant: str, upload_digest: str, uploads_since: float) -> bool:
        """Whether `stored_bytes` already counts this upload for the tenant (a repeat with other parameters)."""
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Job).where(
                *_kept_uploads(tenant, uploads_since), Job.upload_digest == upload_digest)) > 0

    def blob_in_use(self, blob_digest: str) -> bool:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Image).where(Image.blob_digest == blob_digest)) > 0


def _kept_uploads(tenant: str, since: float) -> tuple:
    return (Job.tenant == tenant, Job.upload_bytes.is_not(None), Job.image_deleted_at.is_(None),
            or_(Job.status.in_(ACTIVE), Job.created_at >= since))


def lock_row(s: Session, key: str) -> None:
    """Locks `key`'s row of the lock table until the transaction ends (see `_lock_blob`)."""
    _lock_blob(s, key)


def _lock_blob(s: Session, blob_digest: str) -> None:
    """Locks `blob_digest`'s row until the transaction ends (an upsert: a row lock on PostgreSQL, the write
    lock on SQLite). Writers and deleters of a blob take it before reading which images reference it."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    now = time.time()
    s.execute(insert(BlobLock).values(digest=blob_digest, locked_at=now)
              .on_conflict_do_update(index_elements=[BlobLock.digest], set_={"locked_at": now}))
