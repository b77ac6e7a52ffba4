"""The service's connection to Kafka: a producer and the state view, (re)connected in the background.

The API starts and answers even when Kafka is down: submits then get a 503, never a hang.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

import structlog
from aiokafka import AIOKafkaProducer

from consumers.state_view import StateView
from contract.catalog import Catalog
from contract.errors import KafkaUnavailable
from contract.settings import Settings
from contract.topics import Topics
from producers import Background, JobProducer, ensure_topics, open_producer, retry_forever

log = structlog.get_logger(__name__)


class KafkaLink:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.producer: AIOKafkaProducer | None = None
        self._jobs: JobProducer | None = None
        self._view: StateView | None = None
        self._background = Background("Kafka link")

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

    @property
    def connected_view(self) -> StateView | None:
        """The state view once connected, else None (for health, which must not raise)."""
        return self._view

    async def start(self, wait_s: float = 0.0) -> None:
        """Start connecting; wait up to `wait_s` for the link to be ready, then go on regardless."""
        connecting = self._background.spawn(retry_forever(self._connect, "API link", bootstrap=self.settings.bootstrap))
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(connecting), wait_s)

    async def stop(self) -> None:
        await self._background.stop()
        if self._jobs is not None:
            await self._jobs.stop()
        if self._view is not None:
            await self._view.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def _connect(self) -> None:
        await ensure_topics(self.settings)
        producer = await open_producer(self.settings, "easel-api")
        view = StateView(self.settings)
        try:
            await view.start()
        except BaseException:
            await producer.stop()
            raise
        self.producer, self._view = producer, view
        settings = self.settings
        self._jobs = JobProducer(
            producer, self.topics, settings.submit_timeout_s, settings.submit_settle_s, settings.job_signing_secret,
            Catalog.from_settings(settings),  # each job to its model's request topic
        )
        log.info("connected to Kafka", bootstrap=self.settings.bootstrap)
