"""ModelsLab realtime: POST /api/v6/realtime/text2img and POST /api/v6/realtime/fetch/{id}.

The key travels in the body. Errors are `{"status": "error", "message": ...}` with 400/401/404/503.
Job ids are numeric, as ModelsLab's schema has them.
"""

from __future__ import annotations

import secrets

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contract.states import JobStatus
from dialects import modelslab
from dialects.errors import DialectError
from producers import KafkaUnavailable
from service.errors import ApiError
from dialects.links import file_urls
from service.requests import json_object
from service.state import AppState
from service.submission import RETRY_AFTER_S, QueueFull, build_job, checked_webhook, enqueue, find_status, images_base64, wait_terminal

# How long text2img holds the request before answering `processing` (ModelsLab's "realtime" window).
RESPONSE_WINDOW_S = 20.0


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(modelslab.error(message), status_code=status)


def _render(app: AppState, status: JobStatus, base64: bool) -> JSONResponse:
    count = len(status.outputs) or int(status.spec.get("num_images") or 1)
    urls = file_urls(app.settings, status.job_id, count)
    fetch = f"{app.settings.base_url}/api/v6/realtime/fetch/{status.job_id}"
    encoded = images_base64(app, status) if base64 and status.outputs else None
    return JSONResponse(modelslab.render(status, urls, encoded, fetch))


async def text2img(request: Request) -> Response:
    app: AppState = request.app.state.easel
    body = await json_object(request)
    try:
        owner = app.keys.authenticate(request, body)
    except ApiError as exc:
        return _error(401, "Invalid API key" if body.get("key") else exc.message)
    try:
        fields = modelslab.job_fields(body, safety_checker_available=app.safety_checker)
        webhook = await checked_webhook(app, body.get("webhook"), body.get("track_id"))
        job = build_job(
            fields,
            owner,
            dialect="modelslab",
            webhook=webhook,
            job_id=str(secrets.randbelow(2**53 - 1) + 1),  # numeric, and safe as a JavaScript number
            client_input={k: v for k, v in body.items() if k != "key"},
        )
    except DialectError as exc:
        # ModelsLab's own messages already start with the field ("samples must be ..."); others get it prefixed.
        return _error(400, exc.rule if exc.rule.startswith(exc.field) else str(exc))
    except ValidationError as exc:
        return _error(400, str(DialectError.from_validation(exc)))
    try:
        status = await enqueue(app, job)
    except QueueFull as exc:
        return JSONResponse({**modelslab.error(str(exc)), "retry_after": RETRY_AFTER_S}, status_code=429)
    except KafkaUnavailable:
        return _error(503, "The queue is unavailable; nothing was queued, retry later.")
    if not body.get("instant_response"):
        status = await wait_terminal(app, status, RESPONSE_WINDOW_S)
    return _render(app, status, bool(body.get("base64")))


async def fetch(request: Request) -> Response:
    app: AppState = request.app.state.easel
    body = await json_object(request)
    try:
        owner = app.keys.authenticate(request, body)
    except ApiError:
        return _error(401, "Invalid API key")
    job_id = request.path_params["job_id"]
    try:
        status = await find_status(app, job_id, owner)
    except KafkaUnavailable:
        return _error(503, "The queue is unavailable, retry later.")
    if status is None:
        return _error(404, f"Request id {job_id} not found")
    return _render(app, status, bool((status.client_input or {}).get("base64")))
