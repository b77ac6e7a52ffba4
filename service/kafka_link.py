"""The service's connection to Kafka: a producer and the state view, (re)connected in the background.

The API starts and answers even when Kafka is down: submits then get a 503, never a hang.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

import structlog
from aiokafka import AIOKafkaProducer

from consumers.state_view import StateView
from contract.settings import Settings
from contract.topics import Topics
from producers import JobProducer, KafkaUnavailable, ensure_topics, open_producer

log = structlog.get_logger(__name__)
RETRY_DELAY_S = 2.0


class KafkaLink:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.producer: AIOKafkaProducer | None = None
        self._jobs: JobProducer | None = None
        self._view: StateView | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._jobs is not None and self._view is not None

    @property
    def jobs(self) -> JobProducer:
        if self._jobs is None:
            raise KafkaUnavailable("not connected to Kafka yet")
        return self._jobs

    @property
    def view(self) -> StateView:
        if self._view is None:
            raise KafkaUnavailable("not connected to Kafka yet")
        return self._view

    async def start(self, wait_s: float = 0.0) -> None:
        """Start connecting; wait up to `wait_s` for the link to be ready, then go on regardless."""
        self._task = asyncio.create_task(self._connect())
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), wait_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._view is not None:
            await self._view.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def _connect(self) -> None:
        while True:
            try:
                await ensure_topics(self.settings)
                producer = await open_producer(self.settings, "easel-api")
                view = StateView(self.settings)
                try:
                    await view.start()
                except BaseException:
                    await producer.stop()
                    raise
            except Exception as exc:
                log.warning("Kafka not reachable, retrying", bootstrap=self.settings.bootstrap, error=repr(exc)[:200])
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            self.producer, self._view = producer, view
            self._jobs = JobProducer(producer, self.topics, self.settings.submit_timeout_s)
            log.info("connected to Kafka", bootstrap=self.settings.bootstrap)
            return
