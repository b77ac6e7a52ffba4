"""Prometheus metrics for the API: requests by route and status, and their latency."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("easel_http_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("easel_http_request_seconds", "HTTP request latency", ["route", "method"])


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts requests by route template (never by raw path, which would explode the label set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = _route_template(scope)
            LATENCY.labels(route, scope["method"]).observe(time.perf_counter() - started)
            REQUESTS.labels(route, scope["method"], str(status)).inc()


def _route_template(scope: Scope) -> str:
    """The template of the route the router chose (it notes it in the scope, so nothing is matched twice)."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    return getattr(route, "path", "unknown")
