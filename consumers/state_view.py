"""The state view: the latest `JobStatus` of every job, rebuilt from the compacted state topic.

Each service instance (and each runner) keeps its own copy, so reads never leave the process and
instances stay stateless. `sync()` is a read-your-writes barrier; `wait_for()` serves sync waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from contract.serialization import decode
from contract.settings import Settings
from contract.states import JobStatus
from contract.topics import Topics

log = structlog.get_logger(__name__)


class StateView:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).state
        self._statuses: dict[str, JobStatus] = {}
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._progressed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, replay the topic to its current end, then keep following it."""
        # No group: every view reads every partition, from the beginning.
        consumer = AIOKafkaConsumer(
            self._topic,
            bootstrap_servers=self._settings.bootstrap,
            client_id="easel-state-view",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            self._partitions = await self._assigned(consumer)
            self._task = asyncio.create_task(self._follow())
            await self.sync()
        except BaseException:
            await self.stop()
            raise
        log.info("state view ready", jobs=len(self._statuses))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def get(self, job_id: str) -> JobStatus | None:
        return self._statuses.get(job_id)

    def statuses(self) -> list[JobStatus]:
        return list(self._statuses.values())

    def __len__(self) -> int:
        return len(self._statuses)

    async def sync(self) -> None:
        """Wait until everything written to the topic before this call has been applied."""
        assert self._consumer is not None, "start() first"
        ends = await self._consumer.end_offsets(self._partitions)
        while any(self._positions.get(tp, 0) < end for tp, end in ends.items()):
            self._progressed.clear()
            if self._task is not None and self._task.done():
                self._task.result()  # the follower died: surface why
            await self._progressed.wait()

    async def wait_for(
        self, job_id: str, done: Callable[[JobStatus], bool], timeout_s: float
    ) -> JobStatus | None:
        """The job's status once `done(status)` holds, or the latest one when `timeout_s` ran out."""
        changed = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(changed)
        try:
            async with asyncio.timeout(timeout_s):
                while (status := self._statuses.get(job_id)) is None or not done(status):
                    changed.clear()
                    await changed.wait()
        except TimeoutError:
            pass
        finally:
            watchers = self._watchers[job_id]
            watchers.discard(changed)
            if not watchers:
                del self._watchers[job_id]
        return self._statuses.get(job_id)

    async def _assigned(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        for _ in range(100):  # metadata may lag right after the topic was created
            if partitions := consumer.assignment():
                return sorted(partitions)
            await asyncio.sleep(0.05)
        raise RuntimeError(f"topic {self._topic} does not exist")

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    self._apply(record.key, record.value)
                self._positions[tp] = records[-1].offset + 1
            for tp in self._partitions:  # also moves past compacted gaps and transaction markers
                self._positions[tp] = max(self._positions.get(tp, 0), await self._consumer.position(tp))
            self._progressed.set()

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        if raw_value is None:  # tombstone: the job was purged
            if raw_key is not None:
                self._statuses.pop(raw_key.decode(errors="replace"), None)
            return
        try:
            status = decode(JobStatus, raw_value)
        except (ValidationError, ValueError) as exc:
            log.warning("unreadable state record skipped", error=str(exc)[:200])
            return
        current = self._statuses.get(status.job_id)
        if current is not None and current.seq > status.seq:
            return  # an older write arriving late never rolls a job back
        self._statuses[status.job_id] = status
        for changed in self._watchers.get(status.job_id, ()):
            changed.set()
