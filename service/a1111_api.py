"""AUTOMATIC1111's /sdapi/v1, served natively: synchronous txt2img and img2img, progress, interrupt, catalogues.

Errors are rendered in A1111's shapes by `dialects.a1111.error_answer` (service/errors.py picks it by path).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contract.events import EventType
from contract.job import Job, new_job_id
from contract.samplers import SAMPLER_INFO, SCHEDULE_INFO, UNSUPPORTED_SCHEDULES
from contract.states import Progress
from dialects import a1111
from service.input_images import read_images, split_images
from service.requests import json_object, json_with_images
from service.state import AppState
from service.streaming import hub_of
from service.submission import build_job, enqueue, images_base64, request_cancel, wait_terminal


async def txt2img(request: Request) -> Response:
    app: AppState = request.app.state.easel
    payload = await json_object(request)
    owner = app.keys.authenticate(request, payload, basic=True)
    payload.pop("key", None)  # the key is never stored on Kafka nor echoed in `parameters`
    fields = a1111.job_fields(payload, app.model_names, refiner_names=app.refiner_names)
    job = build_job(app, fields, owner, dialect="a1111", client_input=payload, names=a1111.FIELD_NAMES)
    return await _answer(app, job, payload)


async def img2img(request: Request) -> Response:
    """img2img, and inpainting with a `mask`: one init image as base64, answered as txt2img is."""
    app: AppState = request.app.state.easel
    payload = await json_with_images(request, app.settings)
    owner = app.keys.authenticate(request, payload, basic=True)
    payload.pop("key", None)
    fields = a1111.img2img_fields(payload, app.model_names, refiner_names=app.refiner_names)
    intake = a1111.intake(payload)
    job_id = new_job_id()
    fields, sent = split_images(fields, job_id, a1111.IMAGE_PATHS,
                                invert_mask=intake.invert_mask, fill_masked=intake.fill_masked)
    echoed = sent.echo(payload)  # the images' keys, never their bytes, travel with the job
    job = build_job(app, fields, owner, dialect="a1111", job_id=job_id, client_input=echoed, names=a1111.FIELD_NAMES)
    return await _answer(app, job, echoed, await read_images(app.settings, sent))


async def _answer(app: AppState, job: Job, payload: dict[str, Any], input_images: dict[str, bytes] | None = None
                  ) -> Response:
    """Run the job, wait for it (A1111 is synchronous), answer `{images, parameters, info}`."""
    status = await enqueue(app, job, input_images)
    status = await wait_terminal(app, status, app.settings.job_timeout_s)
    code, body = a1111.txt2img_answer(status, await images_base64(app, status), payload, app.catalog.model_name)
    return JSONResponse(body, status_code=code)


def _latest_of(app: AppState, owner: str) -> Any:
    """The key's newest queued or running job, else its most recent one (A1111 reports its one current job)."""
    view = app.kafka.view
    if live := view.live(owner):
        return max(live, key=lambda s: s.created_at)
    return next(iter(view.recent(owner, 1)), None)


async def progress(request: Request) -> Response:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request, basic=True)
    status = _latest_of(app, owner)
    skip = request.query_params.get("skip_current_image", "false").lower() in ("1", "true")
    image = None
    if status is not None and not status.is_terminal:
        newest_progress, image = _live_events(request, status.job_id)
        if newest_progress is not None and (status.progress is None or newest_progress.step > status.progress.step):
            # Every step is on the events topic; the status is written at most every EASEL_STATUS_INTERVAL_S.
            status = status.model_copy(update={"progress": newest_progress})
    return JSONResponse(a1111.progress(status, None if skip else image))


def _live_events(request: Request, job_id: str) -> tuple[Progress | None, str | None]:
    """The job's newest progress and preview (base64 JPEG) from this instance's stream history."""
    history = hub_of(request).history.get(job_id)
    progress: Progress | None = None
    image: str | None = None
    for item in reversed(history.items if history else []):
        if progress is None and item.type is EventType.PROGRESS:
            progress = Progress.model_validate(orjson.loads(item.payload)["data"])
        elif image is None and item.type is EventType.PREVIEW:
            image = orjson.loads(item.payload)["data"].get("image")
        if progress is not None and image is not None:
            break
    return progress, image


async def interrupt(request: Request) -> Response:
    """Stop the key's running jobs; their txt2img calls answer 200 with what they have, as A1111's do."""
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request, basic=True)
    for status in app.kafka.view.running(owner):
        await request_cancel(app, status.job_id)
    return JSONResponse({})


async def samplers(request: Request) -> Response:
    request.app.state.easel.keys.authenticate(request, basic=True)
    return JSONResponse([
        {"name": s.name, "aliases": list(s.aliases),
         "options": {"scheduler": s.a1111_scheduler} if s.a1111_scheduler else {}}
        for s in SAMPLER_INFO.values()
    ])


async def schedulers(request: Request) -> Response:
    request.app.state.easel.keys.authenticate(request, basic=True)
    return JSONResponse([
        {"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
         "need_inner_model": False}
        for s in SCHEDULE_INFO.values()
    ])


async def sd_models(request: Request) -> Response:
    app: AppState = request.app.state.easel
    app.keys.authenticate(request, basic=True)
    return JSONResponse([
        {"title": name, "model_name": name, "hash": None, "sha256": None, "filename": app.catalog.source(name) or name,
         "config": None}
        for name in app.model_names
    ])


async def options(request: Request) -> Response:
    app: AppState = request.app.state.easel
    app.keys.authenticate(request, basic=True)
    return JSONResponse({
        "sd_model_checkpoint": app.catalog.model_name,
        "sd_vae": "Automatic",
        "samples_format": "png",
        "enable_pnginfo": True,
        "live_previews_enable": False,
        "unsupported_sampler_schedules": {k: list(v) for k, v in UNSUPPORTED_SCHEDULES.items()},
    })
