"""Storing one fitted image: its blob, the classical codecs' files at the same bytes (TUNER_COMPARISONS) and
its image row. It returns what it stored; recording the job is worker/run.py's."""

from __future__ import annotations

import time

import numpy as np

from service.comparisons import make_comparisons
from service.records import Image, Job
from service.storage import ensure_content, put_content
from service.testhooks import pause_point
from worker.context import WorkerContext


def store_image(ctx: WorkerContext, job: Job, pixels: np.ndarray, blob: bytes, psnr: float | None) -> str:
    """Writes `job`'s blob, its comparisons and its image row; returns the blob's digest. The blob is
    content-addressed and may be shared with other tenants' images: until the image row exists, any of them
    may be deleted and take the blob with it, so the row is written in one transaction with a check that the
    blob is (still) stored, under the blob's lock."""
    from tuner_model.codec import read_info  # the codec imports torch: only the child that fits calls this

    store = ctx.store
    blob_digest = put_content(store, "blobs", blob)
    comparisons = make_comparisons(pixels, len(blob), job.image_id, store) if ctx.settings.comparisons else None
    info = read_info(blob)
    pause_point("worker-before-image-row")  # tests only: a delete elsewhere may land here
    ctx.db.add_image_with_blob(
        Image(id=job.image_id, tenant=job.tenant, width=info.width, height=info.height, channels=info.channels,
              bytes=len(blob), bpp=round(info.bpp, 5), psnr=psnr, parameters=info.parameters,
              params=job.params or {}, blob_digest=blob_digest, source="fit", job_id=job.id, created_at=time.time(),
              comparisons=comparisons, name=job.name),
        lambda _digest: ensure_content(store, "blobs", blob))
    return blob_digest
