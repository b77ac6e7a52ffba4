"""RunPod serverless endpoints under /v2/{endpoint_id}/: run, runsync, status, stream, cancel, purge-queue, health.

The endpoint id is free (any name the client likes); one that names a configured model is that model's endpoint.

The `runpod` Python client works against these unchanged (RUNPOD_ENDPOINT_BASE_URL=<easel>/v2).
Errors are rendered in RunPod's shape by `dialects.runpod.error_answer`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contract.errors import Conflict, InvalidParameter
from contract.job import new_job_id
from contract.lifecycle import RETRYABLE
from contract.states import JobState, JobStatus
from dialects import a1111, runpod
from dialects.links import file_urls
from service import cancels
from service.input_images import read_images, split_images
from service.requests import json_with_images
from service.state import AppState
from service.submission import (
    build_job,
    caught_up,
    checked_webhook,
    enqueue,
    images_base64,
    owned_status,
    wait_terminal,
)
from service.workers import WorkerCensus

MAX_WAIT_MS = 300_000
# Under the stock client's 3 s timeout on /cancel: a job still running then is reported IN_PROGRESS.
CANCEL_WAIT_S = 2.5


async def _output(app: AppState, status: JobStatus) -> Any | None:
    if status.state is not JobState.COMPLETED:
        return None
    job_input = status.client_input or {}
    shape = runpod.shape_of(job_input)
    if shape == "public":
        return runpod.public_output(file_urls(app.settings, status.job_id, len(status.outputs)))
    payload = job_input.get("payload", {}) if shape == "a1111-api" else job_input
    return a1111.txt2img_response(status, await images_base64(app, status), payload, app.catalog.model_name)


async def _submit(request: Request, job_id: str | None = None) -> tuple[AppState, JobStatus]:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    body = await json_with_images(request, app.settings)
    fields, shape = runpod.job_fields(
        body, app.model_names, app.refiner_names, request.path_params["endpoint_id"], app.settings.job_timeout_s
    )
    job_id = job_id or new_job_id()
    paths, intake = runpod.images_of(body["input"])
    fields, sent = split_images(fields, job_id, paths, "input",
                                invert_mask=intake.invert_mask, fill_masked=intake.fill_masked)
    # RunPod has no track_id field: `input.track_id` comes back in webhooks, top-level and in the echoed input.
    webhook = await checked_webhook(app, body.get("webhook"), runpod.track_id(body))
    prefix, names = runpod.field_names(shape)
    job = build_job(
        app, fields, owner, dialect="runpod", webhook=webhook, job_id=job_id, client_input=sent.echo(body["input"]),
        prefix=prefix, names=names, echo_field="input",
    )
    return app, await enqueue(app, job, await read_images(app.settings, sent))


async def run(request: Request) -> Response:
    _, status = await _submit(request)
    return JSONResponse({"id": status.job_id, "status": status.state.value})


async def runsync(request: Request) -> Response:
    wait_ms = _wait_ms(request)
    app, status = await _submit(request, job_id=f"sync-{new_job_id()}")
    status = await wait_terminal(app, status, wait_ms / 1000)
    return JSONResponse(runpod.envelope(status, await _output(app, status)))


def _wait_ms(request: Request) -> int:
    try:
        wait_ms = int(request.query_params.get("wait", "90000"))
    except ValueError:
        raise InvalidParameter("must be a whole number of milliseconds", "wait") from None
    if not 1000 <= wait_ms <= MAX_WAIT_MS:
        raise InvalidParameter(f"must be between 1000 and {MAX_WAIT_MS} ms", "wait")
    return wait_ms


async def _owned(request: Request) -> tuple[AppState, JobStatus]:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    return app, await owned_status(app, request.path_params["job_id"], owner)


async def status(request: Request) -> Response:
    app, job = await _owned(request)
    return JSONResponse(runpod.envelope(job, await _output(app, job)))


async def stream(request: Request) -> Response:
    app, job = await _owned(request)
    chunks: list[dict[str, Any]] = []
    if job.progress is not None and not job.is_terminal:
        chunks.append({"output": job.progress.model_dump()})
    elif job.state is JobState.COMPLETED:
        chunks.append({"output": await _output(app, job)})
    return JSONResponse({"status": job.state.value, "stream": chunks})


async def cancel(request: Request) -> Response:
    app, job = await _owned(request)
    if not job.is_terminal:
        job = await cancels.cancel(app, job)
        # A queued job ended at once; a running one stops at its next step: report what is true.
        job = await wait_terminal(app, job, CANCEL_WAIT_S)
    return JSONResponse({"id": job.job_id, "status": job.state.value})


async def retry(request: Request) -> Response:
    """Put a FAILED or TIMED_OUT job back in the queue with the same id and input."""
    app, job = await _owned(request)
    job = (await caught_up(app)).get(job.job_id) or job  # decide on the latest state, not a moment-old one
    if job.state not in RETRYABLE:
        raise Conflict(f"only FAILED or TIMED_OUT jobs can be retried; this one is {job.state.value}")
    requeued = await app.kafka.jobs.requeue(job)
    # Read-your-writes: a status or ?wait= read right after this must not see the old outcome.
    await app.kafka.view.wait_for(job.job_id, lambda s: s.seq >= requeued.seq, app.settings.submit_timeout_s)
    return JSONResponse({"id": requeued.job_id, "status": requeued.state.value})


async def purge_queue(request: Request) -> Response:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    queued = (await caught_up(app)).queued(owner)
    ended = await asyncio.gather(*(cancels.cancel(app, job) for job in queued))
    # Each queued job ended CANCELLED at once (service/cancels.py); one a runner started meanwhile is stopping.
    return JSONResponse({"removed": sum(1 for job in ended if job.state is JobState.CANCELLED), "status": "completed"})


async def health(request: Request) -> Response:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    view = app.kafka.view
    mine = view.owned(owner)
    counts = Counter(s.state for s in mine)
    workers = await _census(request).count(view)
    return JSONResponse({
        "jobs": {
            "completed": counts[JobState.COMPLETED],
            "failed": counts[JobState.FAILED] + counts[JobState.TIMED_OUT],
            "inProgress": counts[JobState.IN_PROGRESS],
            "inQueue": counts[JobState.IN_QUEUE],
            "retried": sum(1 for s in mine if s.retries),
        },
        "workers": {"idle": workers.idle, "running": workers.running},
    })


def _census(request: Request) -> WorkerCensus:
    """The app's census, made on first use (its answer is cached between calls)."""
    census: WorkerCensus | None = getattr(request.app.state, "worker_census", None)
    if census is None:
        census = request.app.state.worker_census = WorkerCensus(request.app.state.easel.settings)
    return census
