"""Publishing a job's events before its outcome, in order, together with the status each leads to.

The outcome (the terminal event and status) is not written here: `emit` keeps it as `outcome`, for
the runner to write together with the request's offset in one transaction (gpu_runner/outcomes.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from contract.events import Event, EventType
from contract.lifecycle import advance
from contract.serialization import encode, key
from contract.states import JobStatus
from contract.topics import Topics
from producers.background import Background
from producers.publish import Ack, enqueue

log = structlog.get_logger(__name__)
# A later status carries all they changed: when writes back up (Kafka away), new ones are dropped.
COALESCED = frozenset({EventType.PROGRESS, EventType.PREVIEW})
# Unsent events past which progress and previews are dropped. Dropped before they take a seq, so the
# events topic's seq stays contiguous for every subscriber.
BACKLOG_LIMIT = 32


class EventWriter:
    """Events of one job: each is folded into the status; both are written, status first, in call order,
    at once (no transaction: progress must be visible while the job runs).

    `emit` never blocks, so it can be called (through the loop) from the generation thread. `flush`
    waits until Kafka acknowledged or refused everything emitted so far. While Kafka is away the
    producer keeps retrying and `flush` waits; a write refused for good is logged and dropped: a job's
    progress may be lost or coalesced, its outcome never.
    """

    def __init__(self, producer: AIOKafkaProducer, topics: Topics, status: JobStatus) -> None:
        self._producer = producer
        self._topics = topics
        self.status = status
        # The status as of the last event before the outcome: what a failure replaces a refused outcome with.
        self.before_outcome = status
        self.outcome: tuple[Event, JobStatus] | None = None
        self._outbox: asyncio.Queue[tuple[Event, JobStatus]] = asyncio.Queue()
        self._acks: list[Ack] = []
        self._background = Background("event writer")
        self._background.spawn(self._send_in_order())

    def emit(self, type: EventType, data: dict[str, Any] | None = None) -> Event | None:
        """The event as numbered and queued; None for progress or a preview dropped while writes are backed up."""
        if type in COALESCED and self._outbox.qsize() >= BACKLOG_LIMIT:
            return None
        event = Event(job_id=self.status.job_id, seq=self.status.seq + 1, type=type, ts=time.time(), data=data or {})
        self.before_outcome, self.status = self.status, advance(self.status, event)
        if type.is_terminal:
            self.outcome = (event, self.status)
        else:
            self._outbox.put_nowait((event, self.status))
        return event

    async def flush(self) -> None:
        await self._outbox.join()
        acks, self._acks = self._acks, []
        for result in await asyncio.gather(*acks, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("a job's event or status was refused", job_id=self.status.job_id, error=repr(result))

    async def close(self) -> None:
        await self._background.stop()

    async def _send_in_order(self) -> None:
        job_key = key(self.status.job_id)
        while True:
            event, status = await self._outbox.get()
            try:
                self._acks.append(await enqueue(self._producer, self._topics.state, encode(status), job_key))
                self._acks.append(await enqueue(self._producer, self._topics.events, encode(event), job_key))
            except Exception as exc:  # refused at once (too large): flush() must not hang on it
                log.warning("a job's event was refused by Kafka", job_id=event.job_id, seq=event.seq, error=repr(exc))
            finally:
                self._outbox.task_done()
