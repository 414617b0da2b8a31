"""What the blob is worth against the classical codecs: the worker encodes the upload with JPEG, WebP and
AVIF at no more bytes than the blob (tuner_model.core.classical) and stores each file with its PSNR; the
API serves them, and the web page shows them beside the network's render."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from service.storage import BlobStore

log = logging.getLogger("tuner.worker")
NAMESPACE = "comparisons"


def comparison_key(image_id: str, codec: str) -> str:
    """Per image (not content-addressed): deleting one tenant's image never removes another's file."""
    return f"{NAMESPACE}/{hashlib.sha256(f'{image_id}|{codec}'.encode()).hexdigest()}"


def make_comparisons(image: np.ndarray, blob_bytes: int, image_id: str, store: BlobStore) -> dict[str, Any]:
    """Stores each codec's file of `image` at most `blob_bytes` long; returns {codec: {quality, bytes, psnr}}
    (a codec that cannot get that small is left out)."""
    from tuner_model.core.classical import CODECS, at_most_bytes

    out: dict[str, Any] = {}
    for codec in CODECS:
        try:
            found = at_most_bytes(image, codec, blob_bytes)
        except Exception:  # noqa: BLE001 - a codec missing from this Pillow build must not fail the job
            log.warning("no %s comparison for %s", codec, image_id, exc_info=True)
            continue
        if found is None:
            continue
        store.put(comparison_key(image_id, codec), found.data)
        out[codec] = {"quality": found.quality, "bytes": len(found.data), "psnr": found.psnr}
    return out


def delete_comparisons(store: BlobStore, image_id: str, comparisons: dict | None) -> None:
    for codec in comparisons or {}:
        store.delete(comparison_key(image_id, codec))
