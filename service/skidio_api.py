"""Skidio Labs txt2img: POST /api/txt2img (answers with the image), POST /api/txt2img/async (a job id),
and /api/txt2img/status (GET with query or body, or POST with body `{"input": {"api_key", "job_id"}}`).

Errors: `{"error": "<field>: <rule>"}` with 400 / 401 / 404 / 503.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contract.blobs import BlobStore
from contract.states import JobState, JobStatus
from dialects import skidio
from dialects.errors import DialectError
from producers import KafkaUnavailable
from service.errors import ApiError
from dialects.links import file_urls
from service.requests import capped_body, json_object
from service.state import AppState
from service.submission import QueueFull, build_job, checked_webhook, enqueue, find_status, images_base64, wait_terminal


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _submit(request: Request) -> tuple[AppState, JobStatus] | JSONResponse:
    app: AppState = request.app.state.easel
    body = await json_object(request)
    try:
        owner = app.keys.authenticate(request, {"key": skidio.api_key(body)})
    except ApiError as exc:
        return _error(401, f"input.api_key: {exc.message}")
    try:
        webhook = await checked_webhook(app, body.get("webhook"), None)
        job = build_job(
            skidio.job_fields(body),
            owner,
            dialect="skidio",
            webhook=webhook,
            client_input={k: v for k, v in body.items() if k != "input"},
        )
    except DialectError as exc:
        return _error(400, str(exc))
    except ValidationError as exc:
        return _error(400, str(DialectError.from_validation(exc)))
    try:
        return app, await enqueue(app, job)
    except QueueFull as exc:
        return _error(429, str(exc))
    except KafkaUnavailable:
        return _error(503, "the queue is unavailable; nothing was queued, retry later")


async def txt2img(request: Request) -> Response:
    submitted = await _submit(request)
    if isinstance(submitted, JSONResponse):
        return submitted
    app, status = submitted
    status = await wait_terminal(app, status, app.settings.sync_wait_s)
    if status.state is not JobState.COMPLETED:
        code = 202 if not status.is_terminal else 500
        return JSONResponse(skidio.render(status, []), status_code=code)
    if len(status.outputs) == 1:
        output = status.outputs[0]
        data = BlobStore(app.settings.blob_dir).get(output.key) or b""
        return Response(data, media_type=output.content_type, headers={"X-Job-Id": status.job_id})
    return JSONResponse({**skidio.render(status, []), "images_base64": images_base64(app, status)})


async def txt2img_async(request: Request) -> Response:
    submitted = await _submit(request)
    if isinstance(submitted, JSONResponse):
        return submitted
    _, status = submitted
    return JSONResponse({"job_id": status.job_id, "status": status.state.value}, status_code=202)


async def job_status(request: Request) -> Response:
    app: AppState = request.app.state.easel
    job_input = await _status_input(request)
    try:
        owner = app.keys.authenticate(request, {"key": job_input.get("api_key")})
    except ApiError as exc:
        return _error(401, f"input.api_key: {exc.message}")
    job_id = job_input.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        return _error(400, "input.job_id: is required")
    try:
        status = await find_status(app, job_id, owner)
    except KafkaUnavailable:
        return _error(503, "the queue is unavailable, retry later")
    if status is None:
        return _error(404, f"input.job_id: no job {job_id}")
    return JSONResponse(skidio.render(status, file_urls(app.settings, status.job_id, len(status.outputs))))


async def _status_input(request: Request) -> dict[str, Any]:
    """`{"input": {...}}` from the body (GET with a body, as documented, or POST), else the query."""
    raw = await capped_body(request)
    if raw.strip():
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, "malformed_json", "the body is not valid JSON", field="body") from None
        if isinstance(body, dict) and isinstance(body.get("input"), dict):
            return body["input"]
    return dict(request.query_params)
