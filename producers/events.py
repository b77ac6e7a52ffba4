"""Publishing a job's events before its outcome, in order, together with the status each leads to.

The outcome (the terminal event and status) is not written here: `emit` keeps it as `outcome`, for
the runner to write together with the request's offset in one transaction (gpu_runner/outcomes.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from contract.events import Event, EventType
from contract.lifecycle import advance, events_per_attempt, resumed
from contract.serialization import encode, key
from contract.states import JobStatus
from contract.topics import Topics
from producers.background import Background
from producers.publish import Ack, enqueue

log = structlog.get_logger(__name__)
# Progress and previews: a later status carries all they changed, so their statuses are written at most every
# `status_interval_s`, and when writes back up (Kafka away) new ones are dropped.
COALESCED = frozenset({EventType.PROGRESS, EventType.PREVIEW})
# Unsent events past which progress and previews are dropped (before they take a seq).
BACKLOG_LIMIT = 32
# What the outbox holds, in write order: a status, an event, or both (status first).
Writes = tuple[JobStatus | None, Event | None]


class EventWriter:
    """Events of one attempt at a job: each is folded into the status; events are written at once, in call
    order (no transaction: progress must be visible while the job runs).

    Thin writes: every event goes to the events topic, but the full status (the compacted state topic) only
    for state changes (`started`) and, for progress and previews, at most once per `status_interval_s` (the
    newest one, at most that late). The numbering starts after `resumed(status)`: a crashed attempt's last
    events may be newer than the status it left.

    `emit` never blocks, so it can be called (through the loop) from the generation thread. `flush`
    writes the newest status if it is pending (not once the outcome was emitted: the outcome's status
    supersedes it, and writing it would cost the job a Kafka round trip before its outcome) and waits
    until Kafka acknowledged or refused everything emitted so far. While Kafka is away the producer keeps
    retrying and `flush` waits; a write refused for good is logged and dropped: a job's progress may be
    lost or coalesced, its outcome never.
    """

    def __init__(
        self, producer: AIOKafkaProducer, topics: Topics, status: JobStatus, *, status_interval_s: float = 0.25
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._status_interval_s = status_interval_s
        self.status = resumed(status)
        # The status as of the last event before the outcome: what a failure replaces a refused outcome with.
        self.before_outcome = self.status
        self.outcome: tuple[Event, JobStatus] | None = None
        # Progress and previews this attempt may still write: `resumed` counts on the attempt keeping to it.
        self._coalesced_left = events_per_attempt(status) - 2
        self._unsent_status: JobStatus | None = None
        self._status_sent_at = -math.inf
        self._loop = asyncio.get_running_loop()
        self._status_timer: asyncio.TimerHandle | None = None
        self._outbox: asyncio.Queue[Writes] = asyncio.Queue()
        self._acks: list[Ack] = []
        self._background = Background("event writer")
        self._background.spawn(self._send_in_order())

    def emit(self, type: EventType, data: dict[str, Any] | None = None) -> Event | None:
        """The event as numbered and queued; None for progress or a preview dropped (writes backed up, or the
        attempt's allowance spent)."""
        coalesced = type in COALESCED
        if coalesced and (self._outbox.qsize() >= BACKLOG_LIMIT or self._coalesced_left <= 0):
            return None
        event = Event(job_id=self.status.job_id, seq=self.status.seq + 1, type=type, ts=time.time(), data=data or {})
        self.before_outcome, self.status = self.status, advance(self.status, event)
        if type.is_terminal:
            self.outcome = (event, self.status)
        elif not coalesced:
            self._write_status(self.status, event)
        else:
            self._coalesced_left -= 1
            if self._loop.time() - self._status_sent_at >= self._status_interval_s:
                self._write_status(self.status, event)
            else:
                self._outbox.put_nowait((None, event))
                self._unsent_status = self.status
                if self._status_timer is None:
                    when = self._status_sent_at + self._status_interval_s
                    self._status_timer = self._loop.call_at(when, self._write_unsent)
        return event

    async def flush(self) -> None:
        if self.outcome is None:
            self._write_unsent()
        else:  # the outcome's status, which the runner writes next, carries everything the pending one would
            self._drop_unsent()
        await self._outbox.join()
        acks, self._acks = self._acks, []
        for result in await asyncio.gather(*acks, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("a job's event or status was refused", job_id=self.status.job_id, error=repr(result))

    async def close(self) -> None:
        if self._status_timer is not None:
            self._status_timer.cancel()
        await self._background.stop()

    def _write_status(self, status: JobStatus, event: Event | None = None) -> None:
        """Queue `status` (then `event`): the newest status, so nothing is pending after it."""
        if self._status_timer is not None:
            self._status_timer.cancel()
            self._status_timer = None
        self._unsent_status = None
        self._status_sent_at = self._loop.time()
        self._outbox.put_nowait((status, event))

    def _write_unsent(self) -> None:
        if self._unsent_status is not None:
            self._write_status(self._unsent_status)

    def _drop_unsent(self) -> None:
        if self._status_timer is not None:
            self._status_timer.cancel()
            self._status_timer = None
        self._unsent_status = None

    async def _send_in_order(self) -> None:
        job_key = key(self.status.job_id)
        while True:
            status, event = await self._outbox.get()
            try:
                if status is not None:
                    self._acks.append(await enqueue(self._producer, self._topics.state, encode(status), job_key))
                if event is not None:
                    self._acks.append(await enqueue(self._producer, self._topics.events, encode(event), job_key))
            except Exception as exc:  # refused at once (too large): flush() must not hang on it
                log.warning("a job's write was refused by Kafka", job_id=self.status.job_id, error=repr(exc))
            finally:
                self._outbox.task_done()
