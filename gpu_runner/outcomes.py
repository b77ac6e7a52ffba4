"""What each request led to, exactly once: its writes and the group's offset past it, in one Kafka transaction.

One transactional producer per request partition the runner holds, under the id `{prefix}.runner.p{n}`.
Whoever handles partition n next starts its producer under the same id, which aborts what an earlier
owner left open and fences that owner: a runner that lost the partition while it worked (stopped
past the session timeout, cut off) can no longer commit, so a job never ends twice. (The consumer's
generation cannot fence: aiokafka's send_offsets_to_transaction does not send it.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced
from aiokafka.structs import ConsumerRecord

from contract.errors import KafkaUnavailable
from contract.settings import Settings
from contract.topics import Topics
from producers import enqueue, open_producer, retry_forever
from producers.publish import Headers, queue_error
from producers.retry import retried

log = structlog.get_logger(__name__)
PRODUCER_FENCED = 90  # the error code newer brokers answer instead of INVALID_PRODUCER_EPOCH (47)


@dataclass(frozen=True)
class Write:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers = ()


class Fenced(Exception):
    """Another producer took this partition's transactional id: nothing of this transaction was committed."""


def _fenced(exc: BaseException) -> bool:
    return isinstance(exc, ProducerFenced | InvalidProducerEpoch) or getattr(exc, "errno", None) == PRODUCER_FENCED


class Outcomes:
    def __init__(self, settings: Settings, group_id: str, transactions: str | None = None) -> None:
        """`transactions`: the namespace of the transactional ids (`Topics.runner_transactions_for`); by default
        the topic prefix."""
        self._settings = settings
        self._group_id = group_id
        self._prefix = transactions or Topics(settings.topic_prefix).prefix
        self._producers: dict[int, AIOKafkaProducer] = {}

    async def commit(
        self,
        record: ConsumerRecord[bytes, bytes],
        writes: Sequence[Write],
        before_commit: Callable[[], None] | None = None,
        next_offset: int | None = None,
    ) -> None:
        """Write `writes` and move the group past `record` in one transaction: all becomes visible, or nothing.

        `next_offset`: where the group's offset goes instead (default: just past `record`), so that a job of a
        batch ending early does not move it past an earlier one still running.

        Waits (retrying) while Kafka is away. Raises RecordRejected when Kafka refused a write for good,
        Fenced when another runner took the partition; nothing was committed then. `before_commit` runs
        once the writes are acknowledged, just before the commit (the test-only fault hook).
        """
        offset = record.offset + 1 if next_offset is None else next_offset
        await self._until_kafka_answers(record, writes, before_commit, offset)

    @retried(lambda exc: not isinstance(exc, KafkaUnavailable))
    async def _until_kafka_answers(
        self,
        record: ConsumerRecord[bytes, bytes],
        writes: Sequence[Write],
        before_commit: Callable[[], None] | None,
        next_offset: int,
    ) -> None:
        tp = TopicPartition(record.topic, record.partition)
        producer = await self._producer(tp.partition)
        try:
            await producer.begin_transaction()
            acks = [await enqueue(producer, w.topic, w.value, w.key, w.headers) for w in writes]
            await asyncio.gather(*acks)
            if before_commit is not None:
                before_commit()
            await producer.send_offsets_to_transaction({tp: next_offset}, self._group_id)
            await producer.commit_transaction()
        except Exception as exc:
            await self._discard(tp.partition)  # the next producer's start aborts what this one left open
            if _fenced(exc):
                raise Fenced(f"partition {tp.partition} was taken over") from exc
            if isinstance(exc, KafkaError):
                raise queue_error(exc, "a request's outcome") from exc
            raise

    async def claim(self, partition: int) -> None:
        """Start the partition's producer if this runner has none: that fences the partition's earlier
        owner and aborts the transaction it left open (which holds back every read_committed reader)."""
        await self._producer(partition)

    async def release(self, partitions: Iterable[int]) -> None:
        """Stop the producers of partitions this runner gave up."""
        for partition in partitions:
            await self._discard(partition)

    async def stop(self) -> None:
        await self.release(list(self._producers))

    async def _producer(self, partition: int) -> AIOKafkaProducer:
        if (producer := self._producers.get(partition)) is None:
            transactional_id = f"{self._prefix}.runner.p{partition}"
            producer = await retry_forever(
                lambda: open_producer(self._settings, transactional_id, transactional_id=transactional_id),
                "starting a transactional producer",
                transactional_id=transactional_id,
            )
            self._producers[partition] = producer
        return producer

    async def _discard(self, partition: int) -> None:
        if (producer := self._producers.pop(partition, None)) is not None:
            try:
                await producer.stop()
            except Exception as exc:  # it is gone either way
                log.warning("a transactional producer did not stop cleanly", partition=partition, error=repr(exc))
