"""Who is calling: the API-key dependency (`CallerDep`), the one for renders that also accepts a signed URL
(`RenderCallerDep`), the per-caller rate limit both charge, and the ownership checks that make another
tenant's ids answer 404 (not 403: an id of someone else's must not be told apart from one that never was)."""

from __future__ import annotations

import hashlib
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.access.keys import OPEN, KeyRing, Principal
from service.access.ratelimit import LocalBuckets, RateLimiter, RedisBuckets, rate_headers, retry_after
from service.access.signing import EXP, KID, SIG, SignatureError, verify
from service.records import Database, Image, Job

from .problems import ProblemError

bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description="An API key made with `tuner keys create` (not needed while the service has none).")
_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="tuner"'}


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _charge(request: Request, who: str) -> None:
    limiter: RateLimiter | None = request.app.state.limiter
    if limiter is None:
        return
    wait, tokens = limiter.take_counted(who)
    # Sent on the answer, whatever it is (service/api/observe.py): a client sees its budget before a 429.
    request.state.rate_headers = rate_headers(limiter, tokens)
    if wait > 0:
        rate = request.app.state.settings.rate_limit_per_s
        raise ProblemError(429, f"over the request rate limit ({rate:g} a second); retry later",
                           headers={"Retry-After": retry_after(wait)})


def _failure_buckets(request: Request) -> RateLimiter | None:
    """The per-address bucket of failed authentications (made on first use; in Redis when the broker is)."""
    state = request.app.state
    if not hasattr(state, "auth_failures"):
        s = state.settings
        per_minute = s.auth_failures_per_minute
        if per_minute <= 0:
            state.auth_failures = None
        elif s.broker_url and s.broker_url.startswith(("redis://", "rediss://")):
            state.auth_failures = RedisBuckets(s.broker_url, per_minute / 60, max(1, round(per_minute)),
                                               prefix="tuner:authfail:")
        else:
            state.auth_failures = LocalBuckets(per_minute / 60, max(1, round(per_minute)))
    return state.auth_failures


def _failed_auth(request: Request) -> None:
    """Counts a wrong key against the caller's address: past TUNER_AUTH_FAILURES_PER_MINUTE, 429 instead of 401
    (key guessing, and a flood of lookups, slowed to a trickle)."""
    buckets = _failure_buckets(request)
    wait = buckets.take(_client(request)) if buckets is not None else 0.0
    if wait > 0:
        raise ProblemError(429, "too many failed authentications from this address; retry later",
                           headers={"Retry-After": retry_after(wait)})


def authenticate(request: Request, creds: HTTPAuthorizationCredentials | None) -> Principal:
    ring: KeyRing = request.app.state.keyring
    if creds is not None:
        found = ring.lookup(creds.credentials)
        if found is None:
            _failed_auth(request)
            raise ProblemError(401, "unknown or revoked API key", headers=_UNAUTHORIZED)
        principal = found
    elif request.headers.get("authorization"):
        _failed_auth(request)
        raise ProblemError(401, "the Authorization header must be 'Bearer <API key>'", headers=_UNAUTHORIZED)
    elif ring.required():
        raise ProblemError(401, "an API key is needed: send 'Authorization: Bearer <key>'", headers=_UNAUTHORIZED)
    else:
        principal = OPEN
    _charge(request, principal.tenant if principal.via == "key" else f"ip:{_client(request)}")
    request.state.principal = principal
    return principal


def caller(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    return authenticate(request, creds)


def render_caller(request: Request,
                  creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """A signed URL renders without a key (a web page embeds it); anything else is an ordinary call."""
    query = request.query_params.multi_items()
    if not any(k == SIG for k, _ in query):
        return authenticate(request, creds)
    keys = request.app.state.settings.signing_key_bytes
    if not keys:
        raise ProblemError(403, "signed URLs are not enabled on this service", problem="signature")
    try:
        verify(request.url.path, query, keys, max_ttl=request.app.state.settings.signed_url_max_ttl_s)
    except SignatureError as e:
        raise ProblemError(403, str(e), problem="signature") from None
    kids = [v for k, v in query if k == KID]
    if kids and not request.app.state.keyring.still_valid(kids[0]):  # the URL dies with the key that minted it
        raise ProblemError(403, "the API key that signed this URL was revoked")
    _charge(request, f"sig:{_client(request)}")
    return Principal("", "signature")


def metrics_reader(request: Request,
                   creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """/metrics: the whole service's counters, for the operator. With keys, only the tenants named in
    TUNER_METRICS_TENANTS may read them (403 for any other key)."""
    who = authenticate(request, creds)
    allowed = {t.strip() for t in request.app.state.settings.metrics_tenants.split(",") if t.strip()}
    if who.via == "key" and who.tenant not in allowed:
        raise ProblemError(403, "this key may not read the service's metrics (TUNER_METRICS_TENANTS)")
    return who


# A year: renders and blobs are pure functions of their URL (strong ETags).
_YEAR = 31_536_000


def cache_headers(request: Request, who: Principal) -> dict[str, str]:
    """Cache-Control for a keyed or signed response. Only a signed URL's answer is the same for everyone
    who holds the URL, so only it is `public` (and no longer than the URL is valid); an answer to a key is
    `private` (no shared cache keeps it) and revalidated by ETag on each use (a deleted image is gone at
    once), and varies with the Authorization header."""
    if who.via == "signature":
        age = _YEAR
        exp = request.query_params.get(EXP)
        if exp is not None and exp.isdigit():
            age = max(0, min(_YEAR, int(exp) - int(time.time())))
        return {"Cache-Control": f"public, max-age={age}, immutable"}
    return {"Cache-Control": "private, no-cache", "Vary": "Authorization"}


CallerDep = Annotated[Principal, Depends(caller)]
RenderCallerDep = Annotated[Principal, Depends(render_caller)]


def owned_image(db: Database, image_id: str, who: Principal) -> Image:
    img = db.get_image(image_id)
    if img is None or (who.via != "signature" and img.tenant != who.tenant):
        raise ProblemError(404, f"no image {image_id!r}")
    return img


def image_version(img: Image) -> str:
    """A short tag of this image row (its blob and when it was made): a signed URL carries it, so deleting an
    image ends its URLs even after the same bytes are uploaded again (the same id, a new row)."""
    return hashlib.sha256(f"{img.blob_digest}|{img.created_at!r}".encode()).hexdigest()[:12]


def owned_job(db: Database, job_id: str, who: Principal) -> Job:
    job = db.get_job(job_id)
    if job is None or job.tenant != who.tenant:
        raise ProblemError(404, f"no job {job_id!r}")
    return job
