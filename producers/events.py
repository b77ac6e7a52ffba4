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


class EventWriter:
    """Events of one job: each is folded into the status, and both are written, in call order
    (the status first; for a terminal event, the status is acknowledged before the event is sent).

    `emit` never blocks, so it can be called (through the loop) from the generation thread;
    `flush` waits until Kafka acknowledged everything emitted so far.
    """

    def __init__(self, producer: AIOKafkaProducer, topics: Topics, status: JobStatus) -> None:
        self._producer = producer
        self._topics = topics
        self.status = status
        self._outbox: asyncio.Queue[tuple[Event, JobStatus]] = asyncio.Queue()
        self._acks: list[asyncio.Future[Any]] = []
        self._error: BaseException | None = None
        self._pump = asyncio.create_task(self._send_in_order())

    def emit(self, type: EventType, data: dict[str, Any] | None = None) -> Event:
        event = Event(job_id=self.status.job_id, seq=self.status.seq + 1, type=type, ts=time.time(), data=data or {})
        self.status = advance(self.status, event)
        self._outbox.put_nowait((event, self.status))
        return event

    async def flush(self) -> None:
        await self._outbox.join()
        acks, self._acks = self._acks, []
        await asyncio.gather(*acks)
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        self._pump.cancel()

    async def _send_in_order(self) -> None:
        job_key = key(self.status.job_id)
        while True:
            event, status = await self._outbox.get()
            try:
                state_ack = await self._producer.send(self._topics.state, encode(status), key=job_key)
                if event.type.is_terminal:
                    # Whoever sees the terminal event may read the outcome at once (images, status):
                    # the status must be durable first. Kafka orders nothing across two topics.
                    await state_ack
                self._acks.append(state_ack)
                self._acks.append(await self._producer.send(self._topics.events, encode(event), key=job_key))
            except Exception as exc:  # surfaced by flush(); keep draining so flush() never hangs
                self._error = exc
            finally:
                self._outbox.task_done()
