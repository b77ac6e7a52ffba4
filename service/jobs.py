"""The native API: submit a job, read its status (optionally waiting), download its images, cancel it."""

from __future__ import annotations

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contract.errors import InvalidField
from contract.job import Job, JobSpec, check_execution_timeout, new_job_id
from dialects.native import IMAGE_PATHS, job_url, render_status
from service import cancels
from service.errors import invalid_field
from service.images import image_response
from service.input_images import read_images, split_images
from service.requests import bounded_float, json_with_images
from service.state import AppState
from service.submission import caught_up, enqueue, owned_status
from service.webhooks import render_deliveries, vet_webhook

SUBMIT_ONLY_FIELDS = ("key", "webhook", "track_id")
# Job fields the API sets; a client naming one is told it is not a known field, as for any other.
SERVER_FIELDS = frozenset(Job.model_fields) - frozenset(JobSpec.model_fields) - {"webhook"}


async def submit_job(request: Request) -> Response:
    app: AppState = request.app.state.easel
    body = await json_with_images(request, app.settings)
    owner = app.keys.authenticate(request, body)
    if (server_field := next((name for name in body if name in SERVER_FIELDS), None)) is not None:
        raise InvalidField("is not a known field", server_field)
    job_id = new_job_id()
    # init_image / mask_image as sent (base64 or a URL) out, the keys they will be stored under in.
    fields, sent_images = split_images(
        {name: value for name, value in body.items() if name not in SUBMIT_ONLY_FIELDS}, job_id, IMAGE_PATHS
    )
    # Validated once, as the Job (the spec's fields first, so their problems are reported first). Strictly: the
    # native API is typed JSON, so `"steps": true` or `"width": "64"` is a client's mistake to report, not to guess.
    job = _strict_job({**fields, "id": job_id, "owner": owner, "webhook": _webhook(body), "dialect": "native"})
    check_execution_timeout(job, app.settings.job_timeout_s)
    if (problem := app.catalog.problem(job)) is not None:  # model, refiner, safety checker: configured ones only
        field, rule = problem
        raise InvalidField(rule, field)
    await vet_webhook(app.settings, job.webhook, "webhook" if isinstance(body.get("webhook"), str) else "webhook.url")
    status = await enqueue(app, job, await read_images(app.settings, sent_images))
    # orjson: the same compact JSON as JSONResponse's, in a tenth of the time, on the busiest route.
    return Response(
        orjson.dumps(render_status(status, app.settings.base_url)), status_code=202, media_type="application/json",
        headers={"Location": job_url(app.settings.base_url, job.id)},
    )


async def get_job(request: Request) -> Response:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    wait_s = bounded_float(request, "wait", 0.0, app.settings.max_wait_s)
    status = await owned_status(app, request.path_params["job_id"], owner)
    if wait_s and not status.is_terminal:
        status = await app.kafka.view.wait_for(status.job_id, lambda s: s.is_terminal, wait_s) or status
    body = render_status(status, app.settings.base_url)
    if (deliveries := render_deliveries(request.app.state.webhook_deliveries.for_job(status.job_id))) is not None:
        body["webhook"] = deliveries
    return JSONResponse(body)


async def get_image(request: Request) -> Response:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    status = await owned_status(app, request.path_params["job_id"], owner)
    index: int = request.path_params["index"]
    if index >= len(status.outputs) and not status.is_terminal:
        # Read-your-writes for stream clients: the `completed` event can arrive before this view has it.
        status = (await caught_up(app)).get(status.job_id) or status
    return await image_response(app, status, index, public=False)


async def cancel_job(request: Request) -> Response:
    """Stop the job: a queued one ends CANCELLED at once, a running one at its next step (unless it finishes first)."""
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    status = await owned_status(app, request.path_params["job_id"], owner)
    if not status.is_terminal:
        status = await cancels.cancel(app, status)
    return JSONResponse(render_status(status, app.settings.base_url), status_code=202)


def _strict_job(fields: dict[str, object]) -> Job:
    try:
        return Job.model_validate(fields, strict=True)
    except ValidationError as exc:
        raise invalid_field(exc) from None


def _webhook(body: dict[str, object]) -> object:
    """The webhook as the Job takes it (validated with the job, its problems named `webhook.*`)."""
    webhook = body.get("webhook")
    if isinstance(webhook, str):  # the common shorthand: a URL plus a top-level track_id
        return {"url": webhook, "track_id": body.get("track_id")}
    return webhook
