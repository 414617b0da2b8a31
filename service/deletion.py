"""What deleting an image takes with it, after its row and (when no other image needs it) its blob are gone
(service/records/images.py `delete_image_and_blob`): the comparison files, every cached render of it, the
marks on its jobs (whose links now lead nowhere), and its original unless another job still keeps it."""

from __future__ import annotations

import logging
import time

from service.comparisons import delete_comparisons
from service.records import Database, Image
from service.settings import Settings
from service.storage import BlobStore

log = logging.getLogger("tuner.api")


def forget_image(db: Database, store: BlobStore, settings: Settings, img: Image, render_prefix: str) -> None:
    """Removes what the deleted image `img` left in storage; `render_prefix` starts every render key of it."""
    delete_comparisons(store, img.id, img.comparisons)
    dropped = store.delete_prefix("renders", render_prefix)
    since = time.time() - settings.upload_retention_s
    originals = 0
    for upload in db.mark_image_deleted(img.id):
        originals += db.drop_upload_if_unused(upload, since, lambda d: store.delete(f"uploads/{d}"))
    log.info("image %s deleted: %d cached renders and %d originals with it", img.id, dropped, originals)
