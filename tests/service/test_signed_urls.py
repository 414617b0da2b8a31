"""Issue 24, item 12, over real HTTP: a signed URL from render-url expires by default, dies with the API key
that minted it and with its image (a re-upload of the same bytes does not bring it back), settles
`format=auto` when it is minted; URLs without an expiry, or with one too far ahead, are refused."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from live import live_api

from service.access.keys import create_key
from service.access.signing import parse_keys, sign
from service.records import Database
from service.settings import Settings
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings

SIGNING = "k1-0123456789abcdef"


@pytest.fixture(scope="module")
def blob(parrots: np.ndarray) -> bytes:
    return encode(parrots, EncodeSettings(steps=30, device="cpu"))[1]


def _put(c, blob: bytes, auth: dict[str, str]) -> str:  # noqa: ANN001
    r = c.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream", **auth})
    assert r.status_code == 201, r.text
    return r.json()["image_id"]


def test_signed_urls_expire_and_die_with_their_key_and_image(tmp_path: Path, blob: bytes) -> None:
    settings = Settings(data_dir=tmp_path, rate_limit_per_s=0, render_compile=False, signing_keys=SIGNING)
    db = Database(settings.resolved_database_url)
    record, key = create_key(db, "alice")
    a = {"Authorization": f"Bearer {key}"}
    other = {"Authorization": f"Bearer {create_key(db, 'alice')[1]}"}
    with live_api(settings) as c:
        img = _put(c, blob, a)
        minted = c.get(f"/v1/images/{img}/render-url?width=24", headers=a).json()
        exp = int(parse_qs(urlsplit(minted["url"]).query)["exp"][0])
        assert abs(exp - (time.time() + 86_400)) < 60 and minted["expires_at"]  # a day by default
        assert c.get(minted["url"]).status_code == 200
        assert c.get(f"/v1/images/{img}/render-url?width=24&expires_in={31 * 86_400}", headers=a).status_code == 422
        keys = parse_keys(SIGNING)
        forever = sign(f"/v1/images/{img}/render?width=24", keys)  # no exp (old `tuner sign` default)
        assert "no expiry" in c.get(forever).json()["detail"]
        far = sign(f"/v1/images/{img}/render?width=24", keys, 365 * 86_400)
        assert c.get(far).status_code == 403

        # the minting key revoked: its URLs stop; a URL minted by another key of the tenant goes on
        by_other = c.get(f"/v1/images/{img}/render-url?width=24", headers=other).json()["url"]
        db.revoke_key(record.id)
        assert "revoked" in c.get(minted["url"]).json()["detail"]
        assert c.get(by_other).status_code == 200

        # deleted and uploaded again (the same id): the old URL stays dead, a new one works
        assert c.delete(f"/v1/images/{img}", headers=other).status_code == 204
        assert c.get(by_other).status_code == 404
        assert _put(c, blob, other) == img
        assert c.get(by_other).status_code == 404
        fresh = c.get(f"/v1/images/{img}/render-url?width=24", headers=other).json()["url"]
        assert c.get(fresh).status_code == 200


def test_format_auto_is_settled_when_signed(tmp_path: Path, blob: bytes) -> None:
    settings = Settings(data_dir=tmp_path, rate_limit_per_s=0, render_compile=False, signing_keys=SIGNING)
    with live_api(settings) as c:
        img = _put(c, blob, {})
        url = c.get(f"/v1/images/{img}/render-url?width=24&format=auto", headers={"Accept": "image/webp,*/*"}).json()
        assert parse_qs(urlsplit(url["url"]).query)["format"] == ["webp"]
        r = c.get(url["url"], headers={"Accept": "image/avif,image/webp,*/*"})
        assert r.headers["content-type"] == "image/webp"
        # a hand-signed `auto` is not re-negotiated from the holder's Accept either
        auto = sign(f"/v1/images/{img}/render?width=24&format=auto", parse_keys(SIGNING), 600)
        assert c.get(auto, headers={"Accept": "image/avif,*/*"}).headers["content-type"] == "image/png"
