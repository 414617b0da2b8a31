"""What every answer gets on its way out (a pure ASGI middleware): a count in Prometheus by route template,
method and status (`tuner_http_requests_total`), and the RateLimit headers the caller's charge left in the
request's state (service/api/security.py), on any answer, errors included."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics


def route_label(scope: Scope) -> str:
    """The matched route's template (`/v1/images/{image_id}`): bounded, unlike the paths themselves."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is not None:
        return path
    return "/static" if scope.get("path", "").startswith("/static/") else "unmatched"


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # shared with the request's `request.state`
        method, status = scope["method"], 500  # the method as sent (HeadAsGet turns HEAD into GET inside)

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = state.get("rate_headers")
                if extra:
                    message = {**message, "headers": [*message.get("headers", []),
                                                      *((k.lower().encode(), v.encode()) for k, v in extra.items())]}
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.requests.labels(method=method, route=route_label(scope), status=str(status)).inc()
