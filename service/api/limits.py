"""Request-body size limit enforced while the body streams in: a chunked request or a lying
Content-Length gets 413 as soon as the count passes the limit, before it is all buffered. And a deadline
for the whole body (TUNER_HTTP_BODY_TIMEOUT_S): an upload trickling in a byte a second gets 408."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import ProblemError, problem_response


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        detail = f"the request body is larger than the limit of {limit} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:  # a cheap early answer; the streaming count below is what's trusted
                    await problem_response(413, detail, scope.get("path"))(scope, receive, send)
                    return
        seen = 0
        deadline = None if self.body_timeout_s is None else time.monotonic() + self.body_timeout_s

        body_done = False

        async def counting_receive() -> Message:
            nonlocal seen, body_done
            if deadline is None or body_done:  # after the body: waiting for a disconnect has no deadline
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise ProblemError(408, f"the request body did not arrive within {self.body_timeout_s:g} s",
                                       headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ProblemError(413, detail)
            return message

        await self.app(scope, counting_receive, send)
