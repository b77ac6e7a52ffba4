"""Submitting jobs: the status and `queued` event first, then the request, each acknowledged by Kafka."""

from __future__ import annotations

import asyncio
import time

import structlog
from aiokafka import AIOKafkaProducer

from contract.errors import QueueError
from contract.events import Event, EventType
from contract.job import Job
from contract.lifecycle import advance, job_of, queued_status
from contract.serialization import encode, key
from contract.states import JobStatus
from contract.topics import Topics
from producers.publish import deadline, enqueue, publish

log = structlog.get_logger(__name__)


class JobProducer:
    def __init__(self, producer: AIOKafkaProducer, topics: Topics, timeout_s: float) -> None:
        self._producer = producer
        self._topics = topics
        self._timeout_s = timeout_s

    async def submit(self, job: Job) -> JobStatus:
        """Return once Kafka acknowledged the job; raise KafkaUnavailable or RecordRejected otherwise."""
        now = time.time()
        status = queued_status(job, now)
        await self._publish(job, status, Event(job_id=job.id, seq=0, type=EventType.QUEUED, ts=now))
        log.info("job submitted", job_id=job.id, track_id=job.track_id, owner=job.owner)
        return status

    async def requeue(self, status: JobStatus) -> JobStatus:
        """Put a failed or timed-out job back in the queue under its id (RunPod's /retry).

        Raises contract.errors.InvalidTransition for a job in any other state.
        """
        now = time.time()
        queued = Event(job_id=status.job_id, seq=status.seq + 1, type=EventType.QUEUED, ts=now)
        requeued = advance(status, queued)
        await self._publish(job_of(status, now), requeued, queued)
        log.info("job requeued", job_id=status.job_id, track_id=status.track_id, retries=requeued.retries)
        return requeued

    async def _publish(self, job: Job, status: JobStatus, queued: Event) -> None:
        """The IN_QUEUE status and `queued` event first, then the request.

        A runner only sees the request after the status is on the compacted state topic, so this
        status can never land after the runner's IN_PROGRESS and overwrite it.
        """
        job_key = key(job.id)
        try:
            async with deadline(self._timeout_s, "the job"):
                state_ack = await enqueue(self._producer, self._topics.state, encode(status), job_key)
                event_ack = await enqueue(self._producer, self._topics.events, encode(queued), job_key)
                await asyncio.gather(state_ack, event_ack)
                await publish(self._producer, self._topics.requests, encode(job), job_key, what="the job")
        except QueueError as exc:
            log.warning("submit failed", job_id=job.id, track_id=job.track_id, error=repr(exc.__cause__))
            raise
