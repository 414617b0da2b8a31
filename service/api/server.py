"""How the API is served (uvicorn), with the limits a public endpoint needs and uvicorn does not set by itself:
a request's headers must arrive within TUNER_HTTP_HEADER_TIMEOUT_S of the connection opening (or of the
previous answer on a kept-alive one: a half-sent request no longer holds a connection open), at most
TUNER_HTTP_MAX_CONCURRENCY connections and requests at once (503 beyond), idle keep-alive connections closed
after TUNER_HTTP_KEEP_ALIVE_S, and the client's address from X-Forwarded-For only when the direct peer is one
of TUNER_TRUSTED_PROXIES (none by default, so a spoofed header is never believed). The body's own deadline
is enforced in the app (service/api/limits.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers (uvicorn has none: it waits for
    half-sent headers as long as the client keeps the socket open)."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_request():  # the headers are in: the app has the request (its body has its own deadline)
            self._cancel_header_timer()
        elif self._header_timer is None and not self.transport.is_closing():
            self._arm_header_timer()  # the first bytes of the next request: a trickle can't extend its time

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self._in_request() and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def uvicorn_config(app: Any, settings: Settings, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's configuration for the API under `settings` (what `tuner api` and `tuner serve` run)."""
    protocol = type("GuardedH11WithTimeout", (GuardedH11,), {"header_timeout_s": settings.http_header_timeout_s})
    proxies = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    return uvicorn.Config(app, host=host, port=port, http=protocol,
                          timeout_keep_alive=max(1, round(settings.http_keep_alive_s)),
                          limit_concurrency=settings.http_max_concurrency,
                          proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None, **kwargs)
