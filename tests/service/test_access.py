"""Access control over real HTTP: API keys and tenants (401, another tenant's ids answer 404, per-tenant
dedupe and idempotency), signed render URLs (tampered and expired ones refused), per-tenant limits (rate 429
with Retry-After, pending jobs 429, storage quota 403) that leave other tenants alone, and `/metrics` behind a
key. The app is real (SQLite records, local store, embedded broker); no worker runs, so jobs stay queued."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import numpy as np
import pytest
from live import live_api

from service.access.keys import create_key
from service.records import Database
from service.settings import Settings
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings

PROBLEM = "application/problem+json"
SIGNING = "k1-0123456789abcdef,k0-fedcba9876543210"


def _problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    return r.json()


@pytest.fixture(scope="module")
def blob(parrots: np.ndarray) -> bytes:
    return encode(parrots, EncodeSettings(steps=30, device="cpu"))[1]


@pytest.fixture(scope="module")
def other_blob(parrots: np.ndarray) -> bytes:
    return encode(parrots, EncodeSettings(steps=20, bpp=1.0, device="cpu"))[1]


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, max_steps=500, signing_keys=SIGNING, render_compile=False,
                    **{"rate_limit_per_s": 0, **kw})


def _keys(tmp_path: Path, settings: Settings, *tenants: str) -> dict[str, dict[str, str]]:
    db = Database(settings.resolved_database_url)
    return {t: {"Authorization": f"Bearer {create_key(db, t)[1]}"} for t in tenants}


def _put_blob(c: httpx.Client, blob: bytes, auth: dict[str, str]) -> str:
    r = c.post("/v1/blobs", content=blob, headers={"content-type": "application/octet-stream", **auth})
    assert r.status_code == 201, r.text
    return r.json()["image_id"]


def test_keys_and_tenants(tmp_path: Path, blob: bytes, parrots_path: Path) -> None:
    settings = _settings(tmp_path)
    keys = _keys(tmp_path, settings, "alice", "bob")
    a, b = keys["alice"], keys["bob"]
    png = parrots_path.read_bytes()
    with live_api(settings) as c:
        # no key, a malformed header, an unknown key: 401 with a challenge
        for headers in ({}, {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer tnr_nope"}):
            r = c.get("/v1/images/img_x", headers=headers)
            _problem(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer")
        _problem(c.get("/metrics"), 401)
        _problem(c.get("/metrics", headers=a), 403)  # a tenant's key reads no service-wide counters
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200

        img = _put_blob(c, blob, a)
        assert c.get(f"/v1/images/{img}", headers=a).status_code == 200
        for method, path in (("GET", ""), ("GET", "/weights"), ("GET", "/render?width=20"), ("DELETE", "")):
            _problem(c.request(method, f"/v1/images/{img}{path}", headers=b), 404)
        assert c.get(f"/v1/images/{img}/render?width=20", headers=a).status_code == 200

        # the same upload from two tenants: two jobs, neither told about the other
        ja = c.post("/v1/images?steps=30", content=png, headers={"content-type": "image/png", **a}).json()
        jb = c.post("/v1/images?steps=30", content=png, headers={"content-type": "image/png", **b}).json()
        assert not ja["deduplicated"] and not jb["deduplicated"] and ja["job_id"] != jb["job_id"]
        assert c.post("/v1/images?steps=30", content=png,
                      headers={"content-type": "image/png", **a}).json()["deduplicated"]
        _problem(c.get(f"/v1/jobs/{ja['job_id']}", headers=b), 404)
        _problem(c.delete(f"/v1/jobs/{ja['job_id']}", headers=b), 404)
        assert c.get(f"/v1/jobs/{ja['job_id']}", headers=a).json()["status"] == "queued"
        assert c.delete(f"/v1/jobs/{ja['job_id']}", headers=a).json()["status"] == "cancelled"

        # idempotency keys are per tenant, and one first used on a deduplicated request is remembered
        key = {"Idempotency-Key": "order-1"}
        r1 = c.post("/v1/images?steps=31", content=png, headers={"content-type": "image/png", **a, **key})
        r2 = c.post("/v1/images?steps=31", content=png, headers={"content-type": "image/png", **b, **key})
        assert r1.json()["job_id"] != r2.json()["job_id"]
        dedup_key = {"Idempotency-Key": "first-on-a-dedupe"}
        again = c.post("/v1/images?steps=31", content=png, headers={"content-type": "image/png", **a, **dedup_key})
        assert again.json()["deduplicated"]
        _problem(c.post("/v1/images?steps=32", content=png, headers={"content-type": "image/png", **a, **dedup_key}),
                 422)

        assert c.delete(f"/v1/images/{img}", headers=a).status_code == 204
        _problem(c.get(f"/v1/images/{img}", headers=a), 404)


def test_revoked_key_and_bootstrap_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path, bootstrap_key="tnr_bootstrap-for-tests", bootstrap_tenant="ops",
                         metrics_tenants="ops")
    db = Database(settings.resolved_database_url)
    record, key = create_key(db, "carol")
    with live_api(settings) as c:
        assert c.get("/v1/images/img_x", headers={"Authorization": f"Bearer {key}"}).status_code == 404
        assert c.get("/metrics", headers={"Authorization": "Bearer tnr_bootstrap-for-tests"}).status_code == 200
        db.revoke_key(record.id)
        _problem(c.get("/v1/images/img_x", headers={"Authorization": f"Bearer {key}"}), 401)


def test_open_without_keys(tmp_path: Path, blob: bytes) -> None:
    """No keys at all: local use, every call is the local tenant (as before tenants existed)."""
    with live_api(_settings(tmp_path)) as c:
        img = _put_blob(c, blob, {})
        assert c.get(f"/v1/images/{img}").status_code == 200
        assert c.get("/metrics").status_code == 200


def test_signed_render_urls(tmp_path: Path, blob: bytes) -> None:
    settings = _settings(tmp_path)
    a = _keys(tmp_path, settings, "alice")["alice"]
    with live_api(settings) as c:
        img = _put_blob(c, blob, a)
        _problem(c.get(f"/v1/images/{img}/render?width=24"), 401)  # unsigned, no key
        r = c.get(f"/v1/images/{img}/render-url?width=24&format=webp&expires_in=600", headers=a)
        assert r.status_code == 200, r.text
        url = r.json()["url"]
        signed = c.get(url)
        assert signed.status_code == 200 and signed.headers["content-type"] == "image/webp"
        assert signed.headers["x-result-width"] == "24"
        # the same parameters in another order: the same signature holds
        parts = urlsplit(url)
        shuffled = f"{parts.path}?{urlencode(list(reversed(parse_qsl(parts.query))))}"
        assert c.get(shuffled).status_code == 200
        # tampered: another size, an added parameter, a changed expiry, a mangled signature
        for bad in (url.replace("width=24", "width=2000"), url + "&crop=0,0,0.5,0.5",
                    url.replace("exp=", "exp=9"), url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"),
                    url + "%C3%A9"):  # a non-ASCII signature (once a 500)
            _problem(c.get(bad), 403)
        # expired (signed by the CLI's own function with an exp in the past), and the old key still verifies
        from service.access.signing import parse_keys, sign

        keys = parse_keys(SIGNING)
        expired = sign(f"/v1/images/{img}/render?width=24", keys, expires_in=-5)
        assert "expired" in _problem(c.get(expired), 403)["detail"]
        rotated = sign(f"/v1/images/{img}/render?width=25", keys[1:], 600)  # signed with the older key
        assert c.get(rotated).status_code == 200
        assert sign("/x?a=1", [b"another-key-0123456789"]) != sign("/x?a=1", keys)


def test_signing_off_answers_409_and_403(tmp_path: Path, blob: bytes) -> None:
    settings = Settings(data_dir=tmp_path, rate_limit_per_s=0, render_compile=False)
    with live_api(settings) as c:
        img = _put_blob(c, blob, {})
        _problem(c.get(f"/v1/images/{img}/render-url?width=24"), 409)
        _problem(c.get(f"/v1/images/{img}/render?width=24&sig=abc"), 403)


def test_rate_limit_is_per_tenant(tmp_path: Path) -> None:
    settings = _settings(tmp_path, rate_limit_per_s=0.2, rate_limit_burst=3)
    keys = _keys(tmp_path, settings, "alice", "bob")
    with live_api(settings) as c:
        codes = [c.get("/v1/images/img_x", headers=keys["alice"]).status_code for _ in range(4)]
        assert codes == [404, 404, 404, 429]
        r = c.get("/v1/images/img_x", headers=keys["alice"])
        body = _problem(r, 429)
        assert int(r.headers["retry-after"]) >= 1 and "rate" in body["detail"]
        assert c.get("/v1/images/img_x", headers=keys["bob"]).status_code == 404  # bob is unaffected


def test_rate_limit_in_redis(tmp_path: Path, redis_url: str) -> None:
    """With a Redis broker the bucket lives in Redis: two API processes share it (here two apps)."""
    import redis

    from service.access.ratelimit import RedisBuckets

    redis.Redis.from_url(redis_url).delete("tuner:rate:test-tenant")
    one, two = RedisBuckets(redis_url, 0.1, 2), RedisBuckets(redis_url, 0.1, 2)
    assert one.take("test-tenant") == 0 and two.take("test-tenant") == 0
    wait = one.take("test-tenant")
    assert 5 < wait <= 10.5  # one token at 0.1 a second


def test_pending_jobs_and_quota_per_tenant(tmp_path: Path, blob: bytes, other_blob: bytes,
                                           parrots_path: Path) -> None:
    png = parrots_path.read_bytes()
    # The quota counts the originals too (kept for the retention time): room for one upload and one blob.
    settings = _settings(tmp_path, max_pending_jobs_per_tenant=2,
                         max_stored_bytes_per_tenant=len(png) + len(blob) + 10)
    keys = _keys(tmp_path, settings, "alice", "bob")
    a, b = keys["alice"], keys["bob"]
    with live_api(settings) as c:
        for steps in (30, 31):
            assert c.post(f"/v1/images?steps={steps}", content=png,
                          headers={"content-type": "image/png", **a}).status_code == 202
        r = c.post("/v1/images?steps=32", content=png, headers={"content-type": "image/png", **a})
        assert "limit" in _problem(r, 429)["detail"] and r.headers["retry-after"]
        assert c.post("/v1/images?steps=32", content=png,
                      headers={"content-type": "image/png", **b}).status_code == 202
        _put_blob(c, blob, a)
        r = c.post("/v1/blobs", content=other_blob, headers={"content-type": "application/octet-stream", **a})
        assert "quota" in _problem(r, 403)["detail"]
        assert c.post("/v1/blobs", content=blob,  # the same blob again is no new storage
                      headers={"content-type": "application/octet-stream", **a}).status_code == 201
        _put_blob(c, blob, b)  # bob's quota is his own
        r = c.post("/v1/images?steps=33", content=png, headers={"content-type": "image/png", **b})
        assert "quota" in _problem(r, 403)["detail"]


def test_serving_beyond_loopback_needs_keys(tmp_path: Path) -> None:
    from tuner_cli.serve import check_exposure
    from tuner_model.core.errors import TunerError

    settings = Settings(data_dir=tmp_path)
    check_exposure(settings, "127.0.0.1")
    with pytest.raises(TunerError, match="tuner keys create"):
        check_exposure(settings, "0.0.0.0")
    create_key(Database(settings.resolved_database_url), "ops")
    time.sleep(0.01)
    check_exposure(settings, "0.0.0.0")
    with pytest.raises(TunerError):
        check_exposure(Settings(data_dir=tmp_path, auth="off"), "0.0.0.0")


def test_quota_counts_originals_and_their_trailing_bytes(tmp_path: Path, parrots: np.ndarray) -> None:
    """Issue 24, item 3: originals (kept for the upload retention time) count toward the quota, trailing junk
    and all; a PNG with bytes after its end is refused outright."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((parrots * 255).astype(np.uint8)).save(buf, "JPEG", quality=80)
    jpeg = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray((parrots * 255).astype(np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    settings = _settings(tmp_path, max_stored_bytes_per_tenant=300_000)
    keys = _keys(tmp_path, settings, "alice", "bob")
    with live_api(settings) as c:
        def send(data: bytes, who: str, ctype: str = "image/jpeg") -> httpx.Response:
            return c.post("/v1/images?steps=30", content=data, headers={"content-type": ctype, **keys[who]})

        r = send(png + b"\0" * 1000, "alice", "image/png")
        assert "after its end" in _problem(r, 422)["detail"]
        assert send(jpeg + b"A" * 200_000, "alice").status_code == 202
        assert send(jpeg + b"A" * 200_000, "alice").status_code == 202  # the same bytes: a repeat, no new storage
        r = send(jpeg + b"B" * 200_000, "alice")
        assert "quota" in _problem(r, 403)["detail"]
        assert send(jpeg + b"B" * 200_000, "bob").status_code == 202  # bob's quota is his own


def test_concurrent_uploads_cannot_all_pass_the_pending_limit(tmp_path: Path, parrots_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24, item 9: two uploads of one tenant that both passed the early checks (held together at the
    pause point after them) are admitted one at a time: with a limit of one pending job, the second is 429."""
    import threading

    pause = tmp_path / "pause"
    pause.mkdir()
    monkeypatch.setenv("TUNER_TEST_PAUSE_DIR", str(pause))
    settings = _settings(tmp_path, max_pending_jobs_per_tenant=1)
    a = _keys(tmp_path, settings, "alice")["alice"]
    png = parrots_path.read_bytes()
    with live_api(settings) as c:
        (pause / "api-after-admission").touch()
        answers: list[int] = []

        def send(steps: int) -> None:
            answers.append(c.post(f"/v1/images?steps={steps}", content=png,
                                  headers={"content-type": "image/png", **a}).status_code)

        threads = [threading.Thread(target=send, args=(30 + i,)) for i in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while not (pause / "api-after-admission.held").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # both requests are past their early checks and held
        (pause / "api-after-admission.go").touch()
        for t in threads:
            t.join(30)
        assert sorted(answers) == [202, 429]
