"""What follows an attempt, written to Kafka before the attempt's record counts as done:
delivered → its status; failed with attempts left → the retry topic for its delay, then its status;
used up, 410 Gone, or refused by the SSRF rules → the dead-letter topic, then its status.
"""

from __future__ import annotations

import time

import structlog
from aiokafka import AIOKafkaProducer

from consumers.webhooks import metrics
from consumers.webhooks.endpoints import Endpoints
from consumers.webhooks.schedule import RetrySchedule
from consumers.webhooks.sender import Attempt
from contract.deliveries import Delivery, DeliveryState, DeliveryStatus
from contract.serialization import encode, key
from contract.topics import Topics
from producers import publish, retry_forever

log = structlog.get_logger(__name__)


class Outcomes:
    def __init__(
        self, producer: AIOKafkaProducer, topics: Topics, schedule: RetrySchedule, endpoints: Endpoints
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._schedule = schedule
        self._endpoints = endpoints

    async def record(self, delivery: Delivery, attempt: Attempt) -> None:
        """Keep trying until Kafka took it: the record is only committed after this returns.

        Raises RecordRejected if Kafka refuses one of the writes for good.
        """
        await retry_forever(
            lambda: self._record(delivery, attempt), "record a webhook outcome",
            job_id=delivery.job_id, track_id=delivery.track_id, delivery_id=delivery.id,
        )

    async def skip_disabled(self, delivery: Delivery, reason: str) -> None:
        """A delivery to an endpoint that answered 410 earlier: not attempted, dead-lettered."""
        await self.record(delivery, Attempt(error=f"endpoint disabled: {reason}", blocked=True, attempted=False))

    async def _record(self, delivery: Delivery, attempt: Attempt) -> None:
        attempts = delivery.attempt + attempt.attempted
        if attempt.ok:
            await self._status(delivery, DeliveryState.DELIVERED, attempts, attempt)
            metrics.DELIVERIES.labels("delivered").inc()
            return
        if attempt.gone:
            await self._endpoints.disable(self._producer, delivery.url, "410 Gone")
        final = attempt.gone or attempt.blocked
        delay = None if final else self._schedule.next_delay_s(attempts, attempt.retry_after_s)
        failed = delivery.model_copy(update={"attempt": attempts, "error": attempt.describe()})
        if delay is None:
            await self._send(self._topics.webhook_dead_letters, failed)
            await self._status(delivery, DeliveryState.FAILED, attempts, attempt)
            metrics.DELIVERIES.labels("failed").inc()
            log.warning("webhook dead-lettered", job_id=delivery.job_id, track_id=delivery.track_id,
                        delivery_id=delivery.id, attempts=attempts, error=attempt.describe())
            return
        due_at = time.time() + delay
        topic = self._topics.webhook_retries(self._schedule.tier_ms(delay))
        await self._send(topic, failed.model_copy(update={"due_at": due_at}))
        await self._status(delivery, DeliveryState.PENDING, attempts, attempt, next_attempt_at=due_at)
        metrics.RETRIES.inc()

    async def _send(self, topic: str, delivery: Delivery) -> None:
        await publish(self._producer, topic, encode(delivery), key(delivery.job_id), what="a webhook delivery")

    async def _status(
        self,
        delivery: Delivery,
        state: DeliveryState,
        attempts: int,
        attempt: Attempt,
        next_attempt_at: float | None = None,
    ) -> None:
        status = DeliveryStatus(
            id=delivery.id,
            job_id=delivery.job_id,
            event=delivery.event,
            seq=delivery.seq,
            state=state,
            attempts=attempts,
            replay=delivery.replay,
            status_code=attempt.status_code,
            error=None if attempt.ok else attempt.describe(),
            next_attempt_at=next_attempt_at,
        )
        await publish(
            self._producer, self._topics.webhook_status, encode(status), key(delivery.id), what="a delivery status"
        )
