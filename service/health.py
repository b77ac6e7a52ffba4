"""Liveness and readiness: 200 when Kafka is connected, 503 (with the reason) when not."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.state import AppState


async def health(request: Request) -> Response:
    app: AppState = request.app.state.easel
    if not app.kafka.ready:
        return JSONResponse({"status": "degraded", "kafka": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "kafka": "connected", "jobs_known": len(app.kafka.view)})
