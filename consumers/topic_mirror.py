"""Follow every partition of one topic, without a group, handing each record to `apply`.

The state view, the runner's cancel list, the dispatcher's lookups (webhook targets, disabled
endpoints), the delivery view and the stream hub are such mirrors. A mirror starts from the
topic's beginning or from a point in time (`StartAt`); `sync()` waits until everything written
before the call has been applied.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from consumers.kafka import mirror_consumer
from contract.errors import KafkaUnavailable
from contract.settings import Settings
from producers.background import Background

log = structlog.get_logger(__name__)
Apply = Callable[[bytes | None, bytes | None], None]


@dataclass(frozen=True)
class StartAt:
    """Where a mirror starts reading: the topic's beginning, or its first record at or after `since_ms`."""

    since_ms: int | None = None

    @classmethod
    def seconds_ago(cls, seconds: float) -> StartAt:
        return cls(since_ms=int((time.time() - seconds) * 1000))


BEGINNING = StartAt()


class TopicMirror:
    def __init__(self, settings: Settings, topic: str, apply: Apply, client_id: str) -> None:
        self._settings = settings
        self.topic = topic
        self._apply = apply
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._progressed = asyncio.Event()
        self._background = Background(f"mirror of {topic}")
        self._follower: asyncio.Task[None] | None = None
        self._stopped_by: Exception | None = None

    async def start(self, at: StartAt = BEGINNING) -> None:
        """Connect, read the topic from `at` to its current end, then keep following it in the background.

        Raises KafkaUnavailable when Kafka cannot be reached or the topic does not exist.
        """
        consumer = mirror_consumer(self._settings, self.topic, self._client_id)
        self._consumer, self._positions, self._stopped_by = consumer, {}, None
        try:
            await self._connect(consumer, at)
            self._follower = self._background.spawn(self._follow(consumer))
            await self.sync()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self._background.stop()
        self._follower = None
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def sync(self) -> None:
        """Wait until every record written before this call has been applied.

        Raises KafkaUnavailable when the mirror is not connected or stopped following the topic.
        """
        if self._consumer is None:
            raise KafkaUnavailable(f"not following {self.topic}: not connected to Kafka")
        try:
            ends = await self._consumer.end_offsets(self._partitions)
        except KafkaError as exc:
            raise KafkaUnavailable(f"could not read the end of {self.topic}") from exc
        while any(self._positions.get(tp, 0) < end for tp, end in ends.items()):
            self._progressed.clear()
            self._raise_if_stopped()
            await self._progressed.wait()

    async def join(self) -> None:
        """Wait while the mirror follows the topic; raise KafkaUnavailable saying why it stopped."""
        if self._follower is not None:
            await self._follower
        self._raise_if_stopped()
        raise KafkaUnavailable(f"stopped following {self.topic}")

    def _raise_if_stopped(self) -> None:
        if self._stopped_by is not None:
            raise KafkaUnavailable(f"stopped following {self.topic}") from self._stopped_by

    async def _connect(self, consumer: AIOKafkaConsumer, at: StartAt) -> None:
        try:
            await consumer.start()
            self._partitions = await self._assigned(consumer)
            if at.since_ms is not None:
                await self._seek(consumer, at.since_ms)
        except KafkaError as exc:
            raise KafkaUnavailable(f"could not start following {self.topic}") from exc

    async def _assigned(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        for _ in range(100):  # metadata may lag right after the topic was created
            if partitions := consumer.assignment():
                return sorted(partitions)
            await asyncio.sleep(0.05)
        raise KafkaUnavailable(f"topic {self.topic} does not exist")

    async def _seek(self, consumer: AIOKafkaConsumer, since_ms: int) -> None:
        offsets = await consumer.offsets_for_times(dict.fromkeys(self._partitions, since_ms))
        for tp, found in offsets.items():
            if found is None:  # nothing that recent: only what comes next
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, found.offset)
            self._positions[tp] = await consumer.position(tp)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, records in batches.items():
                    for record in records:
                        try:
                            self._apply(record.key, record.value)
                        except Exception:  # one bad record must not stop the mirror (nor hang sync())
                            log.exception("record skipped", topic=self.topic, offset=record.offset)
                    self._positions[tp] = records[-1].offset + 1
                for tp in self._partitions:  # also moves past compacted gaps and transaction markers
                    self._positions[tp] = max(self._positions.get(tp, 0), await consumer.position(tp))
                self._progressed.set()
        except Exception as exc:  # Kafka failed us: sync() and join() say so to whoever waits
            log.warning("stopped following a topic", topic=self.topic, error=repr(exc)[:200])
            self._stopped_by = exc
            self._progressed.set()
