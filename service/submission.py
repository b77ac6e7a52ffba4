"""What every dialect's routes share: build a job, enqueue it, find it, wait for it, read its images.

Each raises a `contract.errors.ClientError` (rendered in the route's dialect) or a `QueueError` (Kafka failed us).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

from consumers import state_view
from consumers.state_view import StateView
from contract.control import ControlCommand
from contract.errors import BodyTooLarge, InvalidField, KafkaUnavailable, NotFound, QueueFull
from contract.job import Job, WebhookSpec, check_work_budget, echo_size, new_job_id
from contract.serialization import encode, key
from contract.states import JobStatus
from producers.publish import publish
from service.errors import validated
from service.state import AppState
from service.webhooks import vet_webhook

RETRY_AFTER_S = 30  # what a client over its queue limit is told to wait


def build_job(
    app: AppState,
    spec_fields: dict[str, Any],
    owner: str,
    dialect: str,
    webhook: WebhookSpec | None = None,
    job_id: str | None = None,
    client_input: dict[str, Any] | None = None,
    prefix: str = "",
    names: Mapping[str, str] | None = None,
    echo_field: str = "body",
) -> Job:
    """The job, or an InvalidField named as the dialect's client named it (see `service.errors.validated`).

    `client_input`: what the dialect echoes back, found at `echo_field` in the request; BodyTooLarge over
    EASEL_MAX_ECHO_BYTES, as every status record carries it.
    """
    if client_input is not None and (size := echo_size(client_input)) > (limit := app.settings.max_echo_bytes):
        raise BodyTooLarge(f"{echo_field} is {size} bytes as JSON; at most {limit} are accepted (it is echoed back)",
                           echo_field)
    fields = {
        **spec_fields,
        "id": job_id or new_job_id(),
        "owner": owner,
        "webhook": webhook,
        "dialect": dialect,
        "client_input": client_input,
    }
    job = validated(Job, fields, prefix, names)
    # What only this server's configuration refuses (a LoRA it does not have; the dialects check model names).
    if (problem := app.catalog.problem(job)) is not None:
        field, rule = problem
        raise InvalidField(rule, ".".join(part for part in (prefix, (names or {}).get(field, field)) if part))
    return job


async def checked_webhook(app: AppState, url: object, track_id: object, field: str = "webhook") -> WebhookSpec | None:
    """A dialect's webhook URL (+ track_id), refused with an InvalidField unless it is safe to POST to."""
    if url is None or url == "":
        return None
    spec = validated(WebhookSpec, {"url": url, "track_id": track_id}, names={"url": field})
    await vet_webhook(app.settings, spec, field)
    return spec


async def enqueue(app: AppState, job: Job, input_images: Mapping[str, bytes] | None = None) -> JobStatus:
    """The job's status once Kafka acknowledged it; InvalidField (`budget`) over the work budget, QueueFull over
    the key's queue limit.

    `input_images` (blob key → PNG, see `service.input_images`) are stored once every check passed, before the job
    reaches Kafka: a refused request stores nothing, and a runner finds them. Should Kafka refuse the job, they
    go with it after retention (service/retention.py derives a job's input keys from its id).
    """
    check_work_budget(job, app.settings.max_job_work)
    limit = app.settings.max_queued_per_key
    if limit and over_queue_limit(app, job.owner, limit):
        raise QueueFull(limit, RETRY_AFTER_S)
    if input_images:
        await asyncio.gather(*(app.blobs.put(key, png, "image/png") for key, png in input_images.items()))
        # Counted again after the await: concurrent submits of this key may have queued meanwhile.
        if limit and over_queue_limit(app, job.owner, limit):
            await app.blobs.delete(input_images)
            raise QueueFull(limit, RETRY_AFTER_S)
    # No await between the count and `submit` noting the job: concurrent submits here each count the ones before.
    return await app.kafka.jobs.submit(job)


def over_queue_limit(app: AppState, owner: str, limit: int) -> bool:
    """Whether the owner has `limit` jobs queued: those the state view holds, plus this instance's submits it has
    not read yet.

    Exact for one instance's own submits (acknowledged or in flight); another instance's count once this view has
    read them, within its lag (milliseconds; at most EASEL_SUBMIT_TIMEOUT_S, else KafkaUnavailable). No Kafka
    round trip per submit: catching the view up on each one capped an instance at a few hundred submits/s.
    """
    view = app.kafka.view
    if not view.alive or view.lag_s() > app.settings.submit_timeout_s:
        raise KafkaUnavailable("the state view is behind; the queue limit cannot be counted")
    queued, unseen = len(view.queued(owner)), app.kafka.jobs.unseen
    if queued + unseen.held(owner) < limit:  # the cheap bound first; near the limit, drop what the view has read
        return False
    return queued + unseen.count(owner, lambda job_id: view.get(job_id) is not None) >= limit


async def caught_up(app: AppState) -> StateView:
    """The state view once it has read everything written so far (read-your-writes)."""
    view = app.kafka.view
    try:
        await asyncio.wait_for(view.sync(), app.settings.submit_timeout_s)
    except TimeoutError:
        raise KafkaUnavailable("the state view could not catch up") from None
    return view


def expired(app: AppState, status: JobStatus) -> bool:
    """A job (its status and images) is served for EASEL_RETENTION_S after it finished."""
    return state_view.expired(status, app.settings.retention_s)


async def owned_status(app: AppState, job_id: str, owner: str, field: str = "job_id") -> JobStatus:
    """The job's status if `owner` owns it; NotFound otherwise (another key's job does not exist for this key).

    `field`: where the dialect's clients put the job id, to name it in the error.
    """
    status = app.kafka.view.get(job_id)
    if status is None:  # a job submitted a moment ago may not have reached this view yet
        status = (await caught_up(app)).get(job_id)
    if status is None or status.owner != owner:
        raise NotFound(f"no job {job_id}", field)
    return status


async def wait_terminal(app: AppState, status: JobStatus, timeout_s: float) -> JobStatus:
    if status.is_terminal or timeout_s <= 0:
        return status
    return await app.kafka.view.wait_for(status.job_id, lambda s: s.is_terminal, timeout_s) or status


async def request_cancel(app: AppState, job_id: str) -> None:
    producer = app.kafka.producer
    if producer is None:
        raise KafkaUnavailable("not connected to Kafka yet")
    command = ControlCommand(job_id=job_id, action="cancel")
    await publish(producer, app.kafka.topics.control, encode(command), key(job_id), what="the cancel",
                  within_s=app.settings.submit_timeout_s)


async def images_base64(app: AppState, status: JobStatus) -> list[str]:
    return [base64.b64encode(await app.blobs.get(o.key) or b"").decode() for o in status.outputs]
