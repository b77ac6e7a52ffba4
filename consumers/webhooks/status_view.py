"""Delivery statuses by job: what `GET /v1/jobs/{id}` shows under `webhook`, and what replay consults."""

from __future__ import annotations

import structlog
from pydantic import ValidationError

from consumers.topic_mirror import TopicMirror
from contract.deliveries import DeliveryStatus
from contract.serialization import decode
from contract.settings import Settings
from contract.topics import Topics
from producers.background import Background
from producers.retry import retry_forever

log = structlog.get_logger(__name__)


class DeliveryView:
    def __init__(self, settings: Settings) -> None:
        self._by_job: dict[str, dict[str, DeliveryStatus]] = {}
        self._by_id: dict[str, DeliveryStatus] = {}
        topic = Topics(settings.topic_prefix).webhook_status
        self._mirror = TopicMirror(settings, topic, self._apply, "easel-delivery-view")
        self._background = Background("delivery view")

    async def start(self) -> None:
        """Connect and read the topic to its end (KafkaUnavailable if Kafka is away)."""
        await self._mirror.start()

    def start_in_background(self) -> None:
        """For the API: connect (retrying while Kafka is away) without holding up start-up."""
        self._background.spawn(retry_forever(self._mirror.start, "delivery view"))

    async def stop(self) -> None:
        await self._background.stop()
        await self._mirror.stop()

    def for_job(self, job_id: str) -> list[DeliveryStatus]:
        """The job's deliveries in event order."""
        return sorted(self._by_job.get(job_id, {}).values(), key=lambda s: s.seq)

    def get(self, delivery_id: str) -> DeliveryStatus | None:
        return self._by_id.get(delivery_id)

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        if raw_value is None:
            return
        try:
            status = decode(DeliveryStatus, raw_value)
        except (ValidationError, ValueError):
            log.warning("unreadable delivery status skipped")
            return
        current = self._by_id.get(status.id)
        if current is not None and current.order > status.order:
            return  # a duplicate attempt's late write never rolls a delivery back
        self._by_id[status.id] = status
        self._by_job.setdefault(status.job_id, {})[status.id] = status
