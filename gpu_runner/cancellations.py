"""Which jobs were asked to stop: the runner follows the control topic from its start."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import structlog
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from contract.control import ControlCommand
from contract.serialization import decode
from contract.settings import Settings
from contract.topics import Topics

log = structlog.get_logger(__name__)


class CancelWatcher:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cancelled: set[str] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def is_cancelled(self, job_id: str) -> bool:
        return job_id in self._cancelled  # read from the generation thread: a set lookup is atomic

    async def start(self) -> None:
        # No group: every runner must see every cancel, from the retained history on.
        self._consumer = AIOKafkaConsumer(
            Topics(self._settings.topic_prefix).control,
            bootstrap_servers=self._settings.bootstrap,
            client_id="easel-runner-control",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            try:
                command = decode(ControlCommand, record.value or b"")
            except (ValidationError, ValueError):
                log.warning("unreadable control message skipped", offset=record.offset)
                continue
            self._cancelled.add(command.job_id)
            log.info("cancel requested", job_id=command.job_id)
