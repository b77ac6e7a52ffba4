"""GET /v1/jobs?limit=N: the key's most recent jobs, newest first, from this instance's state view."""

from __future__ import annotations

import asyncio
import heapq

from aiokafka.errors import KafkaError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from producers import KafkaUnavailable
from service.errors import ApiError
from dialects.native import render_status
from service.requests import bounded_float
from service.state import AppState

MAX_LIMIT = 100


async def list_jobs(request: Request) -> Response:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    limit = int(bounded_float(request, "limit", 20, MAX_LIMIT))
    try:
        view = app.kafka.view
        await asyncio.wait_for(view.sync(), app.settings.submit_timeout_s)  # read-your-writes: include a job just submitted
        statuses = view.statuses()
    except (KafkaUnavailable, KafkaError, TimeoutError):
        raise ApiError(503, "kafka_unavailable", "the job view (Kafka) is unavailable; retry later", headers={"Retry-After": "5"}) from None
    own = heapq.nlargest(limit, (s for s in statuses if s.owner == owner), key=lambda s: s.created_at)
    base_url = app.settings.base_url
    return JSONResponse({"jobs": [render_status(s, base_url) | {"prompt": s.spec.get("prompt")} for s in own]})
