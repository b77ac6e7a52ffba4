"""What every dialect's routes share: build a job, enqueue it, wait for it, read its images."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from contract.blobs import BlobStore
from contract.control import ControlCommand
from contract.job import Job, WebhookSpec, new_job_id
from contract.serialization import encode, key
from contract.states import JobState, JobStatus
from dialects.errors import DialectError
from producers import KafkaUnavailable
from service.errors import ApiError
from service.state import AppState
from service.webhooks import vet_webhook


def build_job(
    spec_fields: dict[str, Any],
    owner: str,
    dialect: str,
    webhook: WebhookSpec | None = None,
    job_id: str | None = None,
    client_input: dict[str, Any] | None = None,
) -> Job:
    """Raises pydantic.ValidationError naming the field; each dialect renders it its own way."""
    return Job(
        **spec_fields,
        id=job_id or new_job_id(),
        owner=owner,
        webhook=webhook,
        dialect=dialect,
        client_input=client_input,
    )


async def checked_webhook(app: AppState, url: object, track_id: object, field: str = "webhook") -> WebhookSpec | None:
    """A dialect's webhook URL (+ track_id), refused with a DialectError unless it is safe to POST to."""
    if url is None or url == "":
        return None
    try:
        spec = WebhookSpec.model_validate({"url": url, "track_id": track_id})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "track_id" if first["loc"][:1] == ("track_id",) else field
        raise DialectError(name, str(first["msg"])) from None
    try:
        await vet_webhook(app.settings, spec, field)
    except ApiError as exc:
        raise DialectError(field, exc.message.removeprefix(f"{field}: ")) from None
    return spec


class QueueFull(Exception):
    """The key already has EASEL_MAX_QUEUED_PER_KEY jobs waiting; each dialect answers 429."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"Rate limit exceeded. Maximum {limit} queued requests allowed.")
        self.limit = limit


RETRY_AFTER_S = 30


async def enqueue(app: AppState, job: Job) -> JobStatus:
    """Raises QueueFull over the key's queue limit, KafkaUnavailable when Kafka did not acknowledge."""
    limit = app.settings.max_queued_per_key
    if limit:
        # Count this key's own submits of a moment ago too. Two submits at the same instant may both
        # get in: the limit is a guard against floods, not an exact quota.
        try:
            await asyncio.wait_for(app.kafka.view.sync(), app.settings.submit_timeout_s)
        except (KafkaError, TimeoutError):
            raise KafkaUnavailable("the state view could not catch up") from None
        waiting = sum(1 for s in app.kafka.view.statuses() if s.owner == job.owner and s.state is JobState.IN_QUEUE)
        if waiting >= limit:
            raise QueueFull(limit)
    return await app.kafka.jobs.submit(job)


def expired(app: AppState, status: JobStatus) -> bool:
    """Images are served for EASEL_RETENTION_S after the job finished."""
    return status.finished_at is not None and time.time() - status.finished_at > app.settings.retention_s


async def find_status(app: AppState, job_id: str, owner: str) -> JobStatus | None:
    """The job's status if `owner` owns it; another key's job does not exist for this key."""
    view = app.kafka.view
    status = view.get(job_id)
    if status is None:
        # Read-your-writes: a job submitted a moment ago may not have reached this view yet.
        try:
            await asyncio.wait_for(view.sync(), app.settings.submit_timeout_s)
        except (KafkaError, TimeoutError):
            raise KafkaUnavailable("the state view could not catch up") from None
        status = view.get(job_id)
    return status if status is not None and status.owner == owner else None


async def wait_terminal(app: AppState, status: JobStatus, timeout_s: float) -> JobStatus:
    if status.is_terminal or timeout_s <= 0:
        return status
    return await app.kafka.view.wait_for(status.job_id, lambda s: s.is_terminal, timeout_s) or status


async def request_cancel(app: AppState, job_id: str) -> None:
    producer = app.kafka.producer
    if producer is None:
        raise KafkaUnavailable("not connected to Kafka yet")
    command = ControlCommand(job_id=job_id, action="cancel")
    try:
        async with asyncio.timeout(app.settings.submit_timeout_s):
            await (await producer.send(app.kafka.topics.control, encode(command), key=key(job_id)))
    except (KafkaError, TimeoutError) as exc:
        raise KafkaUnavailable("Kafka did not acknowledge the cancel") from exc


def images_base64(app: AppState, status: JobStatus) -> list[str]:
    store = BlobStore(app.settings.blob_dir)
    return [base64.b64encode(store.get(o.key) or b"").decode() for o in status.outputs]
