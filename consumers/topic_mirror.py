"""Follow every partition of one topic, without a group, handing each record to `apply`.

The state view, the runner's cancel list, the dispatcher's lookups (webhook targets, disabled
endpoints), the delivery view and the stream hub are such mirrors. A mirror starts from the
topic's beginning or from a point in time (`StartAt`); `sync()` waits until everything written
before the call has been applied. `alive` and `lag_s()` are its health, read without asking Kafka.
"""

from __future__ import annotations

import asyncio
import math
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
        # When (epoch ms) Kafka last answered a fetch of every partition with nothing left unapplied.
        self._caught_up_ms: int | None = None

    @property
    def alive(self) -> bool:
        """Whether it follows the topic now: started, and its loop has not stopped."""
        return self._follower is not None and not self._follower.done()

    def lag_s(self) -> float:
        """Seconds since it last knew it had applied everything on the topic (inf: never yet).

        Grows while records wait to be applied, and while Kafka does not answer its fetches.
        """
        if self._caught_up_ms is None:
            return math.inf
        return max(0.0, time.time() - self._caught_up_ms / 1000)

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
        asked_ms = int(time.time() * 1000)
        try:
            ends = await self._consumer.end_offsets(self._partitions)
        except KafkaError as exc:
            raise KafkaUnavailable(f"could not read the end of {self.topic}") from exc
        while any(self._positions.get(tp, 0) < end for tp, end in ends.items()):
            self._progressed.clear()
            self._raise_if_stopped()
            await self._progressed.wait()
        self._caught_up_ms = max(self._caught_up_ms or 0, asked_ms)  # caught up with the topic as it was then

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

    def _note_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        """Move the caught-up time to the oldest last fetch if every partition is applied up to its end."""
        fetched_at = []
        for tp in self._partitions:
            end, at = consumer.last_stable_offset(tp), consumer.last_poll_timestamp(tp)  # read_committed's end
            if end is None or at is None or self._positions.get(tp, 0) < end:
                return
            fetched_at.append(at)
        if fetched_at:
            self._caught_up_ms = max(self._caught_up_ms or 0, min(fetched_at))

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
                self._note_caught_up(consumer)
                self._progressed.set()
        except Exception as exc:  # Kafka failed us: sync() and join() say so to whoever waits
            log.warning("stopped following a topic", topic=self.topic, error=repr(exc)[:200])
            self._stopped_by = exc
            self._progressed.set()
