"""Skidio Labs txt2img: POST /api/txt2img (answers with the images), POST /api/txt2img/async (a job id),
and /api/txt2img/status (GET with query or body, or POST with body `{"input": {"api_key", "job_id"}}`).

Answers are JSON (`dialects.skidio.render`); POST /api/txt2img answers the raw image instead to a client whose
Accept header prefers `image/png`.

Errors are rendered in Skidio's shape by `dialects.skidio.error_answer`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contract.errors import InvalidField
from contract.states import JobState, JobStatus
from dialects import skidio
from dialects.links import file_urls
from service.requests import capped_body, json_object, parse_object
from service.state import AppState
from service.submission import build_job, checked_webhook, enqueue, images_base64, owned_status, wait_terminal


async def _submit(request: Request) -> tuple[AppState, JobStatus]:
    app: AppState = request.app.state.easel
    body = await json_object(request)
    owner = app.keys.authenticate(request, {"key": skidio.api_key(body)}, field=skidio.KEY_FIELD)
    webhook = await checked_webhook(app, body.get("webhook"), None)
    job = build_job(
        app,
        skidio.job_fields(body, app.catalog.models),
        owner,
        dialect="skidio",
        webhook=webhook,
        client_input={k: v for k, v in body.items() if k != "input"},
        names=skidio.FIELD_NAMES,
    )
    return app, await enqueue(app, job)


async def txt2img(request: Request) -> Response:
    app, status = await _submit(request)
    status = await wait_terminal(app, status, app.settings.sync_wait_s)
    if status.state is not JobState.COMPLETED:
        code = 202 if not status.is_terminal else 500
        return JSONResponse(await _render(app, status), status_code=code)
    if skidio.wants_png(request.headers.get("accept", "")):
        output = status.outputs[0]  # the first of several: the JSON answer has them all
        headers = {"X-Job-Id": status.job_id, "X-Image-Count": str(len(status.outputs))}
        return Response(await app.blobs.get(output.key) or b"", media_type=output.content_type, headers=headers)
    return JSONResponse(await _render(app, status))


async def _render(app: AppState, status: JobStatus) -> dict[str, Any]:
    """The job's answer; the images (base64) once it completed."""
    urls = file_urls(app.settings, status.job_id, len(status.outputs))
    images = await images_base64(app, status) if status.state is JobState.COMPLETED else []
    return skidio.render(status, urls, images)


async def txt2img_async(request: Request) -> Response:
    _, status = await _submit(request)
    return JSONResponse({"job_id": status.job_id, "status": status.state.value}, status_code=202)


async def job_status(request: Request) -> Response:
    app: AppState = request.app.state.easel
    job_input = await _status_input(request)
    owner = app.keys.authenticate(request, {"key": job_input.get("api_key")}, field=skidio.KEY_FIELD)
    job_id = job_input.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise InvalidField("is required", "input.job_id")
    status = await owned_status(app, job_id, owner, field="input.job_id")
    return JSONResponse(await _render(app, status))


async def _status_input(request: Request) -> dict[str, Any]:
    """`{"input": {...}}` from the body (GET with a body, as documented, or POST), else the query."""
    raw = await capped_body(request)
    if raw.strip():
        body = parse_object(raw)
        if isinstance(body.get("input"), dict):
            job_input: dict[str, Any] = body["input"]
            return job_input
    return dict(request.query_params)
