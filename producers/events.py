"""Publishing a job's events, in order, together with the status they lead to."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from contract.events import Event, EventType
from contract.lifecycle import advance
from contract.serialization import encode, key
from contract.states import JobStatus
from contract.topics import Topics
from producers.background import Background
from producers.publish import WRITE_DEADLINE_S, Ack, deadline, enqueue


class EventWriter:
    """Events of one job: each is folded into the status, and both are written, in call order
    (the status first; for a terminal event, the status is acknowledged before the event is sent).

    `emit` never blocks, so it can be called (through the loop) from the generation thread;
    `flush` waits until Kafka acknowledged everything emitted so far, and raises KafkaUnavailable
    or RecordRejected for the first write that failed.
    """

    def __init__(
        self, producer: AIOKafkaProducer, topics: Topics, status: JobStatus, deadline_s: float = WRITE_DEADLINE_S
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._deadline_s = deadline_s
        self.status = status
        self._outbox: asyncio.Queue[tuple[Event, JobStatus]] = asyncio.Queue()
        self._acks: list[Ack] = []
        self._error: Exception | None = None
        self._background = Background("event writer")
        self._background.spawn(self._send_in_order())

    def emit(self, type: EventType, data: dict[str, Any] | None = None) -> Event:
        event = Event(job_id=self.status.job_id, seq=self.status.seq + 1, type=type, ts=time.time(), data=data or {})
        self.status = advance(self.status, event)
        self._outbox.put_nowait((event, self.status))
        return event

    async def flush(self) -> None:
        await self._outbox.join()
        acks, self._acks = self._acks, []
        async with deadline(self._deadline_s, "a job's events"):
            await asyncio.gather(*acks)
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        await self._background.stop()

    async def _send_in_order(self) -> None:
        job_key = key(self.status.job_id)
        while True:
            event, status = await self._outbox.get()
            try:
                async with deadline(self._deadline_s, f"the {event.type.value} event of job {event.job_id}"):
                    state_ack = await enqueue(self._producer, self._topics.state, encode(status), job_key)
                    if event.type.is_terminal:
                        # Whoever sees the terminal event may read the outcome at once (images, status):
                        # the status must be durable first. Kafka orders nothing across two topics.
                        await state_ack
                    self._acks.append(state_ack)
                    self._acks.append(await enqueue(self._producer, self._topics.events, encode(event), job_key))
            except Exception as exc:  # surfaced by flush(); keep draining so flush() never hangs
                self._error = self._error or exc
            finally:
                self._outbox.task_done()
