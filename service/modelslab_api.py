"""ModelsLab realtime: POST /api/v6/realtime/{text2img,img2img,inpaint} and POST /api/v6/realtime/fetch/{id}.

The key travels in the body. Errors are rendered in ModelsLab's shape by `dialects.modelslab.error_answer`.
Job ids are numeric, as ModelsLab's schema has them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contract.states import JobStatus
from dialects import modelslab
from dialects.links import file_urls
from service.input_images import read_images, split_images
from service.requests import json_object, json_with_images
from service.state import AppState
from service.submission import build_job, checked_webhook, enqueue, images_base64, owned_status, wait_terminal

# How long text2img holds the request before answering `processing` (ModelsLab's "realtime" window).
RESPONSE_WINDOW_S = 20.0


async def _render(app: AppState, status: JobStatus, base64: bool) -> JSONResponse:
    count = len(status.outputs) or int(status.spec.get("num_images") or 1)
    urls = file_urls(app.settings, status.job_id, count)
    fetch = f"{app.settings.base_url}/api/v6/realtime/fetch/{status.job_id}"
    encoded = await images_base64(app, status) if base64 and status.outputs else None
    return JSONResponse(modelslab.render(status, urls, encoded, fetch))


async def text2img(request: Request) -> Response:
    return await _submit(request, "text2img")


async def img2img(request: Request) -> Response:
    """ModelsLab realtime img2img: `init_image` (a URL or base64) repainted at `strength`."""
    return await _submit(request, "img2img")


async def inpaint(request: Request) -> Response:
    """ModelsLab realtime inpaint: `init_image` repainted where `mask_image` is white."""
    return await _submit(request, "inpaint")


async def _submit(request: Request, kind: str) -> Response:
    app: AppState = request.app.state.easel
    body = await (json_with_images(request, app.settings) if modelslab.KINDS[kind] else json_object(request))
    owner = app.keys.authenticate(request, body)
    job_id = modelslab.new_job_id()
    fields = modelslab.job_fields(body, safety_checker_available=app.safety_checker, kind=kind)
    fields, sent = split_images(fields, job_id, modelslab.IMAGE_PATHS)
    webhook = await checked_webhook(app, body.get("webhook"), modelslab.webhook_track_id(body))
    job = build_job(
        app,
        fields,
        owner,
        dialect="modelslab",
        webhook=webhook,
        job_id=job_id,
        client_input=sent.echo({k: v for k, v in body.items() if k != "key"}),  # images as their keys
        names=modelslab.FIELD_NAMES,
    )
    status = await enqueue(app, job, await read_images(app.settings, sent))
    if not modelslab.flag(body, "instant_response"):
        status = await wait_terminal(app, status, RESPONSE_WINDOW_S)
    return await _render(app, status, modelslab.flag(body, "base64"))


async def fetch(request: Request) -> Response:
    app: AppState = request.app.state.easel
    body = await json_object(request)
    owner = app.keys.authenticate(request, body)
    status = await owned_status(app, request.path_params["job_id"], owner)
    return await _render(app, status, modelslab.flag(status.client_input or {}, "base64"))
