"""HEAD on every GET route: the answer GET would give (status and headers, Content-Length included), without
the body (RFC 9110 §9.3.2). Health probes, link checkers and `curl -I` use HEAD.

A pure ASGI middleware: the request goes in as GET, the body the route produces is dropped, and once the
headers are sent the route is told its client has gone, so a stream (the job's events) ends at once. A HEAD
on a render costs what its GET costs (a 304 or a cache hit costs nothing more), as on other image services.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BODY_MESSAGES = ("http.response.body", "http.response.pathsend", "http.response.zerocopy")


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        started = False

        async def head_receive() -> Message:
            if started:  # the answer is complete: whatever still runs sees its client gone
                return {"type": "http.disconnect"}
            return await receive()

        async def head_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if not started:
                    started = True
                    await send(message)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif message["type"] not in _BODY_MESSAGES:
                await send(message)

        scope["method"] = "GET"  # in place: the middleware outside (RequestObserver) sees the route matched
        await self.app(scope, head_receive, head_send)
