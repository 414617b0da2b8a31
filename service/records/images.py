"""Queries of finished images."""

from __future__ import annotations

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from service.records.engine import Records
from service.records.tables import Image


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

    def stored_bytes(self, tenant: str) -> int:
        """The bytes of a tenant's stored blobs (its quota counts these)."""
        with self.session() as s:
            return int(s.scalar(select(func.coalesce(func.sum(Image.bytes), 0)).where(Image.tenant == tenant)) or 0)

    def blob_in_use(self, blob_digest: str) -> bool:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Image).where(Image.blob_digest == blob_digest)) > 0
