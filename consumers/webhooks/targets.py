"""Which jobs asked for webhooks: mirrors of the request topics (one per model), job id → where and what to deliver.

Read from the request topics rather than from events so that jobs written straight to Kafka get
their webhooks too, and no event has to carry the URL. A job's request is on Kafka before any of
its runner events (the runner read it from there), so one `sync()` finds the target of any event.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from pydantic import ValidationError

from consumers.topic_mirror import TopicMirror
from contract.catalog import Catalog
from contract.job import Job
from contract.serialization import decode
from contract.settings import Settings
from contract.topics import Topics

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    track_id: str | None
    events: frozenset[str]
    dialect: str
    owner: str


class Targets:
    def __init__(self, settings: Settings) -> None:
        self._targets: dict[str, WebhookTarget] = {}
        self._without: set[str] = set()  # jobs known to want no webhook: no sync needed for their events
        topics = Catalog.from_settings(settings).request_topics(Topics(settings.topic_prefix))
        self._mirrors = [TopicMirror(settings, topic, self._apply, "easel-webhook-targets") for topic in topics]

    async def start(self) -> None:
        try:
            for mirror in self._mirrors:
                await mirror.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for mirror in self._mirrors:
            await mirror.stop()

    async def _sync(self) -> None:
        await asyncio.gather(*(mirror.sync() for mirror in self._mirrors))

    async def lookup(self, job_id: str, wait_s: float = 0.0) -> WebhookTarget | None:
        """The job's target; syncs once if the job is unknown, and keeps looking for up to `wait_s`."""
        deadline = time.monotonic() + wait_s
        while True:
            if (target := self._targets.get(job_id)) is not None or job_id in self._without:
                return target
            await self._sync()
            if (target := self._targets.get(job_id)) is not None or job_id in self._without:
                return target
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.05)

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        try:
            job = decode(Job, raw_value or b"")
        except (ValidationError, ValueError):
            return  # the runner dead-letters it; no webhook for a job that never was valid
        if job.webhook is None:
            self._without.add(job.id)
            return
        self._targets[job.id] = WebhookTarget(
            url=str(job.webhook.url),
            track_id=job.webhook.track_id,
            events=frozenset(job.webhook.events),
            dialect=job.dialect,
            owner=job.owner,
        )
