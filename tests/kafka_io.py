"""Reading and writing the stack's topics directly, as any Kafka client would."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from contract.events import Event
from contract.serialization import decode

Records = list[ConsumerRecord[bytes, bytes]]


async def read_topic(
    bootstrap: str, topic: str, stop: Callable[[Records], bool], timeout_s: float = 60.0, linger_s: float = 0.0
) -> Records:
    """Every record of `topic` from the beginning until `stop(records)` holds, then `linger_s` more."""
    # read_committed, as every Easel reader: an aborted outcome (a fenced or crashed runner) was never visible.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: Records = []
    deadline = time.monotonic() + timeout_s
    try:
        while not stop(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: gave up after {len(records)} records")
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        linger_until = time.monotonic() + linger_s
        while time.monotonic() < linger_until:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def requested_job(bootstrap: str, topic: str, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The one job on the requests topic `topic` that `wanted` picks, as the API wrote it."""

    def jobs(records: Records) -> list[dict[str, Any]]:
        return [job for r in records if r.value and wanted(job := orjson.loads(r.value))]

    records = await read_topic(bootstrap, topic, lambda rs: bool(jobs(rs)), linger_s=0.5)
    [job] = jobs(records)
    return job


def events_of(records: Records, job_id: str) -> list[Event]:
    return [decode(Event, r.value) for r in records if r.key == job_id.encode()]


async def job_events(bootstrap: str, topic: str, job_id: str, timeout_s: float = 60.0) -> list[Event]:
    """The job's events up to its terminal one, plus a second more: a duplicate would show there."""
    records = await read_topic(
        bootstrap, topic, lambda rs: any(e.type.is_terminal for e in events_of(rs, job_id)), timeout_s, linger_s=1.0
    )
    return events_of(records, job_id)


async def produce(bootstrap: str, topic: str, value: bytes | dict[str, object], key: bytes | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        await producer.send_and_wait(topic, payload, key=key)
    finally:
        await producer.stop()
