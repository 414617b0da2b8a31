"""Per-tenant request rates: a token bucket per caller (`rate` tokens a second, up to `burst`). In Redis when
the broker is Redis, so that every API process shares one bucket per tenant; in the process otherwise (the
embedded mode runs one API process). A Redis that does not answer lets requests through (logged): the rate
limit protects the service, and an outage of the limiter should not become an outage of the service."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Protocol

log = logging.getLogger("tuner.api")

# KEYS[1]: the bucket; ARGV: rate per second, burst. Redis's own clock, so API hosts' clocks don't matter.
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {tostring(wait), tostring(tokens)}
"""


class RateLimiter(Protocol):
    rate: float
    burst: int

    def take(self, who: str) -> float:
        """Takes one token for `who`: 0 when allowed, else the seconds until a token is there."""
        ...

    def take_counted(self, who: str) -> tuple[float, float]:
        """As take, with the tokens left in `who`'s bucket afterwards (the RateLimit headers)."""
        ...


class LocalBuckets:
    """Token buckets in this process (bounded: the least recently used callers are forgotten)."""

    def __init__(self, rate: float, burst: int, max_callers: int = 100_000) -> None:
        self.rate, self.burst, self.max_callers = rate, burst, max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        return self.take_counted(who)[0]

    def take_counted(self, who: str) -> tuple[float, float]:
        now = time.monotonic()
        with self._lock:
            tokens, ts = self._buckets.pop(who, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - ts) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[who] = (tokens, now)
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        return wait, tokens


class RedisBuckets:
    def __init__(self, url: str, rate: float, burst: int, prefix: str = "tuner:rate:") -> None:
        import redis

        self.rate, self.burst, self.prefix = rate, burst, prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._redis.register_script(_LUA)

    def take(self, who: str) -> float:
        return self.take_counted(who)[0]

    def take_counted(self, who: str) -> tuple[float, float]:
        try:
            wait, tokens = self._script(keys=[self.prefix + who], args=[self.rate, self.burst])
            return float(wait), float(tokens)
        except Exception:  # noqa: BLE001 - see the module's docstring: fail open
            log.warning("rate limiter: Redis unavailable; request let through", exc_info=True)
            return 0.0, float(self.burst)


def make_limiter(broker_url: str | None, rate: float, burst: int) -> RateLimiter | None:
    """None when rate limiting is off (rate 0)."""
    if rate <= 0:
        return None
    if broker_url and broker_url.startswith(("redis://", "rediss://")):
        return RedisBuckets(broker_url, rate, burst)
    return LocalBuckets(rate, burst)


def retry_after(wait: float) -> str:
    return str(max(1, math.ceil(wait)))


def rate_headers(limiter: RateLimiter, tokens: float) -> dict[str, str]:
    """The RateLimit headers (draft-ietf-httpapi-ratelimit-headers): the burst, the whole requests left in it,
    and the seconds until it is whole again."""
    reset = (limiter.burst - tokens) / limiter.rate if limiter.rate > 0 else 0
    return {"RateLimit-Limit": str(limiter.burst), "RateLimit-Remaining": str(max(0, math.floor(tokens))),
            "RateLimit-Reset": str(max(0, math.ceil(reset)))}
