"""Signed render URLs: HMAC-SHA256 over the canonical path and query, URL-safe base64 without padding, in a
`sig` query parameter; an optional `exp` (Unix time) is signed with the rest. Several keys may be configured:
the first signs, any verifies (rotation without downtime, as imgproxy does with its key list).

The canonical form is the path, then the query's (name, value) pairs other than `sig`, sorted and
percent-encoded, so that the order a client writes them in does not matter and nothing can be added unsigned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit

SIG, EXP = "sig", "exp"
# Signed with the rest by the API's render-url: the id of the API key that minted the URL (the URL dies with
# the key) and the image's version (a URL for a deleted image stays dead after the same bytes come back).
KID, VER = "kid", "v"
MIN_KEY_BYTES = 16


class SignatureError(ValueError):
    """A signed URL that is not valid (bad or missing signature, or expired): one line, safe to show."""


def parse_keys(text: str | None) -> tuple[bytes, ...]:
    """Keys from a comma-separated setting; each at least MIN_KEY_BYTES long."""
    keys = tuple(k.strip().encode() for k in (text or "").split(",") if k.strip())
    for k in keys:
        if len(k) < MIN_KEY_BYTES:
            raise ValueError(f"each signing key must be at least {MIN_KEY_BYTES} characters")
    return keys


def canonical(path: str, query: Iterable[tuple[str, str]]) -> str:
    pairs = sorted((k, v) for k, v in query if k != SIG)
    return f"{path}?{urlencode(pairs)}"


def _mac(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(url: str, keys: Sequence[bytes], expires_in: float | None = None, now: float | None = None) -> str:
    """`url` (a path with a query, e.g. /v1/images/ID/render?width=256) with `exp` (if asked) and `sig` added."""
    if not keys:
        raise ValueError("no signing keys configured (TUNER_SIGNING_KEYS)")
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in (SIG, EXP)]
    if expires_in is not None:
        query.append((EXP, str(int((now or time.time()) + expires_in))))
    sig = _mac(keys[0], canonical(parts.path, query))
    return f"{parts.path}?{urlencode([*query, (SIG, sig)])}"


def verify(path: str, query: Sequence[tuple[str, str]], keys: Sequence[bytes], now: float | None = None,
           max_ttl: float | None = None) -> None:
    """Raises SignatureError unless the query carries a valid, unexpired signature by one of `keys`. With
    `max_ttl`, the URL must carry an expiry, at most that many seconds ahead."""
    sigs = [v for k, v in query if k == SIG]
    if len(sigs) != 1:
        raise SignatureError("the URL is not signed" if not sigs else "the URL has more than one signature")
    message = canonical(path, query)
    given = sigs[0].encode("utf-8", "surrogateescape")  # bytes: compare_digest refuses non-ASCII str
    if not any(hmac.compare_digest(_mac(k, message).encode(), given) for k in keys):
        raise SignatureError("the URL's signature is not valid")
    exps = [v for k, v in query if k == EXP]
    if exps:
        try:
            exp = int(exps[0])
        except ValueError:
            raise SignatureError("exp must be a Unix time in seconds") from None
        if len(exps) > 1 or exp < (now or time.time()):
            raise SignatureError("the signed URL has expired")
        if max_ttl is not None and exp > (now or time.time()) + max_ttl:
            raise SignatureError(f"the signed URL expires more than {max_ttl:g} s ahead (TUNER_SIGNED_URL_MAX_TTL_S)")
    elif max_ttl is not None:
        raise SignatureError("the signed URL has no expiry (exp); this service needs one")
