"""Follow every partition of one topic from its beginning, without a group, handing each record to `apply`.

The state view, the runner's cancel list, the dispatcher's lookups (webhook targets, disabled
endpoints) and the service's delivery view are such mirrors. `sync()` waits until everything written before the call has been applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from contract.settings import Settings

log = structlog.get_logger(__name__)
Apply = Callable[[bytes | None, bytes | None], None]


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
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, replay the topic to its current end, then keep following it."""
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self._settings.bootstrap,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            self._partitions = await self._assigned(consumer)
            self._task = asyncio.create_task(self._follow())
            # If the follower dies, wake sync() so it raises the reason instead of waiting forever.
            self._task.add_done_callback(lambda _: self._progressed.set())
            await self.sync()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def sync(self) -> None:
        assert self._consumer is not None, "start() first"
        ends = await self._consumer.end_offsets(self._partitions)
        while any(self._positions.get(tp, 0) < end for tp, end in ends.items()):
            self._progressed.clear()
            if self._task is not None and self._task.done():
                self._task.result()  # the follower died: surface why
            await self._progressed.wait()

    async def _assigned(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        for _ in range(100):  # metadata may lag right after the topic was created
            if partitions := consumer.assignment():
                return sorted(partitions)
            await asyncio.sleep(0.05)
        raise RuntimeError(f"topic {self.topic} does not exist")

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    try:
                        self._apply(record.key, record.value)
                    except Exception:  # one bad record must not stop the mirror (nor hang sync())
                        log.exception("record skipped", topic=self.topic, offset=record.offset)
                self._positions[tp] = records[-1].offset + 1
            for tp in self._partitions:  # also moves past compacted gaps
                self._positions[tp] = max(self._positions.get(tp, 0), await self._consumer.position(tp))
            self._progressed.set()
