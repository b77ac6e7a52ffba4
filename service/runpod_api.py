"""RunPod serverless endpoints under /v2/{endpoint_id}/: run, runsync, status, stream, cancel, purge-queue, health.

The `runpod` Python client works against these unchanged (RUNPOD_ENDPOINT_BASE_URL=<easel>/v2).
Errors: `{"error": "<field>: <rule>"}` with 400 / 401 / 404 / 503.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contract.lifecycle import RETRYABLE
from contract.states import JobState, JobStatus
from dialects import a1111, runpod
from dialects.errors import DialectError
from producers import KafkaUnavailable
from service.errors import ApiError
from dialects.links import file_urls
from service.requests import json_object
from service.state import AppState
from service.submission import QueueFull, build_job, checked_webhook, enqueue, find_status, images_base64, request_cancel, wait_terminal

MAX_WAIT_MS = 300_000


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _output(app: AppState, status: JobStatus) -> Any | None:
    if status.state is not JobState.COMPLETED:
        return None
    job_input = status.client_input or {}
    shape = runpod.shape_of(job_input)
    if shape == "public":
        return runpod.public_output(file_urls(app.settings, status.job_id, len(status.outputs)))
    payload = job_input.get("payload", {}) if shape == "a1111-api" else job_input
    return a1111.txt2img_response(status, images_base64(app, status), payload)


async def _submit(request: Request, job_id_prefix: str) -> tuple[AppState, JobStatus] | JSONResponse:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    body = await json_object(request)
    try:
        fields, _shape = runpod.job_fields(body, app.model_names, app.refiner_names)
        # RunPod has no track_id field; a track_id inside `input` comes back because input is echoed.
        webhook = await checked_webhook(app, body.get("webhook"), None)
        job = build_job(
            fields,
            owner,
            dialect="runpod",
            webhook=webhook,
            client_input=body["input"],
        )
        if job_id_prefix:
            job = job.model_copy(update={"id": job_id_prefix + job.id})
    except DialectError as exc:
        return _error(400, str(exc))
    except ValidationError as exc:
        return _error(400, str(DialectError.from_validation(exc, prefix="input")))
    try:
        return app, await enqueue(app, job)
    except QueueFull as exc:
        return _error(429, str(exc))
    except KafkaUnavailable:
        return _error(503, "the job queue is unavailable; nothing was queued, retry later")


async def run(request: Request) -> Response:
    submitted = await _submit(request, "")
    if isinstance(submitted, JSONResponse):
        return submitted
    _, status = submitted
    return JSONResponse({"id": status.job_id, "status": status.state.value})


async def runsync(request: Request) -> Response:
    try:
        wait_ms = int(request.query_params.get("wait", "90000"))
    except ValueError:
        return _error(400, "wait: must be a whole number of milliseconds")
    if not 1000 <= wait_ms <= MAX_WAIT_MS:
        return _error(400, f"wait: must be between 1000 and {MAX_WAIT_MS} ms")
    submitted = await _submit(request, "sync-")
    if isinstance(submitted, JSONResponse):
        return submitted
    app, status = submitted
    status = await wait_terminal(app, status, wait_ms / 1000)
    return JSONResponse(runpod.envelope(status, _output(app, status)))


async def _owned(request: Request) -> tuple[AppState, JobStatus] | JSONResponse:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    job_id = request.path_params["job_id"]
    try:
        status = await find_status(app, job_id, owner)
    except KafkaUnavailable:
        return _error(503, "the job queue is unavailable, retry later")
    if status is None:
        return _error(404, f"job {job_id} not found")
    return app, status


async def status(request: Request) -> Response:
    owned = await _owned(request)
    if isinstance(owned, JSONResponse):
        return owned
    app, job = owned
    return JSONResponse(runpod.envelope(job, _output(app, job)))


async def stream(request: Request) -> Response:
    owned = await _owned(request)
    if isinstance(owned, JSONResponse):
        return owned
    app, job = owned
    chunks = []
    if job.progress is not None and not job.is_terminal:
        chunks.append({"output": job.progress.model_dump()})
    elif job.state is JobState.COMPLETED:
        chunks.append({"output": _output(app, job)})
    return JSONResponse({"status": job.state.value, "stream": chunks})


async def cancel(request: Request) -> Response:
    owned = await _owned(request)
    if isinstance(owned, JSONResponse):
        return owned
    app, job = owned
    if not job.is_terminal:
        try:
            await request_cancel(app, job.job_id)
        except KafkaUnavailable:
            return _error(503, "the job queue is unavailable, retry later")
        # A running job stops at its next step; a queued one when a runner reaches it: report what is true.
        job = await wait_terminal(app, job, 5.0)
    return JSONResponse({"id": job.job_id, "status": job.state.value})


async def retry(request: Request) -> Response:
    """Put a FAILED or TIMED_OUT job back in the queue with the same id and input."""
    owned = await _owned(request)
    if isinstance(owned, JSONResponse):
        return owned
    app, job = owned
    await app.kafka.view.sync()  # decide on the latest state, not on what this view had a moment ago
    job = app.kafka.view.get(job.job_id) or job
    if job.state not in RETRYABLE:
        return _error(400, f"retry: only FAILED or TIMED_OUT jobs can be retried; this one is {job.state.value}")
    try:
        requeued = await app.kafka.jobs.requeue(job)
    except KafkaUnavailable:
        return _error(503, "the job queue is unavailable, retry later")
    # Read-your-writes: a status or ?wait= read right after this must not see the old outcome.
    await app.kafka.view.wait_for(job.job_id, lambda s: s.seq >= requeued.seq, app.settings.submit_timeout_s)
    return JSONResponse({"id": requeued.job_id, "status": requeued.state.value})


async def purge_queue(request: Request) -> Response:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    queued = [s for s in app.kafka.view.statuses() if s.owner == owner and s.state is JobState.IN_QUEUE]
    try:
        for job in queued:
            await request_cancel(app, job.job_id)
    except KafkaUnavailable:
        raise ApiError(503, "kafka_unavailable", "the job queue is unavailable") from None
    # They end CANCELLED as runners reach them (in queue order, without generating anything).
    return JSONResponse({"removed": len(queued), "status": "completed"})


async def health(request: Request) -> Response:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    mine = [s for s in app.kafka.view.statuses() if s.owner == owner]
    counts = Counter(s.state for s in mine)
    running = {s.runner_id for s in app.kafka.view.statuses() if s.state is JobState.IN_PROGRESS}
    return JSONResponse({
        "jobs": {
            "completed": counts[JobState.COMPLETED],
            "failed": counts[JobState.FAILED] + counts[JobState.TIMED_OUT],
            "inProgress": counts[JobState.IN_PROGRESS],
            "inQueue": counts[JobState.IN_QUEUE],
            "retried": sum(1 for s in mine if s.retries),
        },
        "workers": {"idle": 0, "running": len(running)},
    })
