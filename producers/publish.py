"""Publishing a record, and what Kafka's refusals mean for the caller.

aiokafka raises many errors; callers see two (contract.errors):
- KafkaUnavailable: Kafka may take the record later. Retriable errors (timeouts, a leader moving,
  a broker away: KafkaTimeoutError, NotLeaderForPartitionError, any error with `retriable`) are
  retried with backoff until the caller's deadline; then this.
- RecordRejected: Kafka refused this record for good (over a size limit, not authorised, ...).
  Raised at once; sending it again cannot help.

`publish` sends one record, waits for its acknowledgement, and does all of the above. Writers that
keep several records in flight `enqueue` them (hand them to the producer, retrying) and await the
acknowledgements later, all inside one `deadline(seconds, what)`, which bounds them and turns
aiokafka's errors into ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, ProducerClosed
from aiokafka.partitioner import murmur2

from contract.errors import KafkaUnavailable, QueueError, RecordRejected
from producers.retry import retried

# How long a process that has nobody waiting on an answer (the runner's events, the dispatcher's
# records) retries a write before it calls Kafka unavailable. The API answers within submit_timeout_s.
WRITE_DEADLINE_S = 60.0

Headers = Sequence[tuple[str, bytes]]
Ack = asyncio.Future[Any]


def is_retriable(exc: BaseException) -> bool:
    """Whether Kafka may accept the same record later (aiokafka leaves its own timeout unmarked)."""
    return isinstance(exc, TimeoutError | KafkaTimeoutError) or (isinstance(exc, KafkaError) and exc.retriable)


def queue_error(exc: BaseException, what: str) -> QueueError:
    """Our error for an aiokafka error (or a deadline) met while writing `what`."""
    if is_retriable(exc) or isinstance(exc, ProducerClosed):
        return KafkaUnavailable(f"Kafka did not acknowledge {what} in time")
    return RecordRejected(f"Kafka refused {what}: {type(exc).__name__}")


@asynccontextmanager
async def deadline(seconds: float, what: str) -> AsyncIterator[None]:
    """Bound the writes inside to `seconds`; aiokafka's errors leave as KafkaUnavailable or RecordRejected."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except (TimeoutError, KafkaError) as exc:
        raise queue_error(exc, what) from exc


def key_hash(key: bytes) -> int:
    """The key's hash as Kafka's default partitioner takes it (murmur2, pure Python in aiokafka: worth doing once
    for a writer that sends one key to several topics)."""
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_of(hashed: int, partitions: Collection[int]) -> int:
    """The partition Kafka's default partitioner picks for a key with this `key_hash` (the same as runners',
    dispatchers' and Java clients', so a job's records from every writer share one partition per topic)."""
    return sorted(partitions)[hashed % len(partitions)]


def _permanent(exc: Exception) -> bool:
    return not is_retriable(exc)


async def enqueue(
    producer: AIOKafkaProducer,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    headers: Headers = (),
    hashed: int | None = None,
) -> Ack:
    """Hand a record to the producer (retrying while Kafka cannot take it yet); await the result to know it landed.

    `hashed`: the key's `key_hash`, when the caller has it, so the partition is not hashed again.
    """
    try:  # at once, as it almost always goes: backoff's wrapper cost as much as the send itself
        return await _send(producer, topic, value, key, headers, hashed)
    except Exception as exc:
        if _permanent(exc):
            raise
    return await _send_retrying(producer, topic, value, key, headers, hashed)


async def _send(
    producer: AIOKafkaProducer, topic: str, value: bytes | None, key: bytes | None, headers: Headers, hashed: int | None
) -> Ack:
    partition = None if hashed is None else partition_of(hashed, await producer.partitions_for(topic))
    ack: Ack = await producer.send(topic, value, key=key, partition=partition, headers=list(headers) or None)
    return ack


_send_retrying = retried(_permanent)(_send)


@retried(_permanent)
async def _acknowledged(
    producer: AIOKafkaProducer, topic: str, value: bytes | None, key: bytes | None, headers: Headers
) -> None:
    # Sent again when the acknowledgement reports a retriable error (an idempotent producer
    # retries those itself, so this is for the rest).
    await (await enqueue(producer, topic, value, key, headers))


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    *,
    what: str,
    within_s: float = WRITE_DEADLINE_S,
    headers: Headers = (),
) -> None:
    """Return once Kafka acknowledged the record; KafkaUnavailable after `within_s`, RecordRejected at once.

    `what` names the record in the error ("the job", "a dead letter").
    """
    async with deadline(within_s, what):
        await _acknowledged(producer, topic, value, key, headers)
