"""What follows an attempt, written to Kafka before the attempt's record counts as done:
delivered → its status; failed with attempts left → the retry topic for its delay, then its status;
used up, 410 Gone, or refused by the SSRF rules → the dead-letter topic, then its status.

Every write is retried while Kafka is away (the record stays uncommitted meanwhile). A write Kafka
refuses for good (RecordRejected) is never retried: the delivery is dead-lettered without its body
(`Delivery.without_body`) and marked failed, so one bad record never holds the commit point.
An event whose routing failed is routed again on the same schedule (`route_failed`).
"""

from __future__ import annotations

import time

import structlog
from aiokafka import AIOKafkaProducer

from consumers.webhooks import metrics
from consumers.webhooks.endpoints import Endpoints
from consumers.webhooks.schedule import RetrySchedule
from consumers.webhooks.sender import Attempt
from contract.deliveries import (
    RECORD_KIND_HEADER,
    ROUTE_KIND,
    Delivery,
    DeliveryState,
    DeliveryStatus,
    PendingRoute,
)
from contract.errors import RecordRejected
from contract.serialization import encode, key
from contract.topics import Topics
from producers import publish, retry_forever
from producers.publish import Headers

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
        """Returns once Kafka took what follows `attempt`: the record is only committed after this returns."""
        try:
            await self._record(delivery, attempt)
        except RecordRejected as exc:
            await self.refused(delivery, str(exc))

    async def skip_disabled(self, delivery: Delivery, reason: str) -> None:
        """A delivery to an endpoint that answered 410 earlier: not attempted, dead-lettered."""
        await self.record(delivery, Attempt(error=f"endpoint disabled: {reason}", blocked=True, attempted=False))

    async def refused(self, delivery: Delivery, reason: str) -> None:
        """Kafka refused a record of this delivery for good: dead-letter it, small, and mark it failed."""
        ids = {"job_id": delivery.job_id, "track_id": delivery.track_id, "delivery_id": delivery.id}
        failure = Attempt(error=reason, attempted=False)
        try:
            await self._write(self._topics.webhook_dead_letters, encode(delivery.without_body(reason)), delivery.job_id)
            await self._status(delivery, DeliveryState.FAILED, delivery.attempt, failure)
        except RecordRejected as exc:
            metrics.DELIVERIES.labels("lost").inc()
            log.error("webhook lost: Kafka refuses even its dead letter", reason=reason, error=str(exc), **ids)
            return
        metrics.DELIVERIES.labels("failed").inc()
        log.error("webhook dead-lettered: Kafka refused its record", reason=reason, url=delivery.url, **ids)

    async def route_failed(self, pending: PendingRoute, error: str) -> None:
        """Routing `pending.event` failed again: route it once more after the schedule's next delay, or,
        with the schedule used up, dead-letter the event with the reason."""
        event = pending.event
        attempts = pending.attempt + 1
        delay = self._schedule.next_delay_s(attempts, None)
        if delay is None:
            reason = f"webhook routing failed {attempts} times: {error}"
            headers = [("easel-reason", reason.encode()[:1000])]
            await self._write(self._topics.dead_letters, encode(event), event.job_id, headers)
            metrics.DELIVERIES.labels("failed").inc()
            log.error("webhook event dead-lettered", job_id=event.job_id, seq=event.seq, reason=reason)
            return
        again = PendingRoute(event=event, attempt=attempts, due_at=time.time() + delay, error=error)
        topic = self._topics.webhook_retries(self._schedule.tier_ms(delay))
        await self._write(topic, encode(again), event.job_id, [(RECORD_KIND_HEADER, ROUTE_KIND)])
        metrics.RETRIES.inc()
        log.warning("webhook routing failed; retried", job_id=event.job_id, seq=event.seq, attempts=attempts,
                    retry_in_s=delay, error=error)

    async def _record(self, delivery: Delivery, attempt: Attempt) -> None:
        attempts = delivery.attempt + attempt.attempted
        if attempt.ok:
            await self._status(delivery, DeliveryState.DELIVERED, attempts, attempt)
            metrics.DELIVERIES.labels("delivered").inc()
            return
        if attempt.gone:
            await retry_forever(
                lambda: self._endpoints.disable(self._producer, delivery.url, "410 Gone"), "disable a webhook endpoint"
            )
        final = attempt.gone or attempt.blocked
        delay = None if final else self._schedule.next_delay_s(attempts, attempt.retry_after_s)
        if delay is None:
            failed = delivery.after_failure(attempts, attempt.describe())
            await self._write(self._topics.webhook_dead_letters, encode(failed), delivery.job_id)
            await self._status(delivery, DeliveryState.FAILED, attempts, attempt)
            metrics.DELIVERIES.labels("failed").inc()
            log.warning("webhook dead-lettered", job_id=delivery.job_id, track_id=delivery.track_id,
                        delivery_id=delivery.id, attempts=attempts, error=attempt.describe())
            return
        due_at = time.time() + delay
        waiting = delivery.after_failure(attempts, attempt.describe(), due_at=due_at)
        await self._write(self._topics.webhook_retries(self._schedule.tier_ms(delay)), encode(waiting), delivery.job_id)
        await self._status(delivery, DeliveryState.PENDING, attempts, attempt, next_attempt_at=due_at)
        metrics.RETRIES.inc()

    async def _write(self, topic: str, value: bytes, job_id: str, headers: Headers = ()) -> None:
        """Publish, retrying while Kafka is away; RecordRejected when Kafka refuses the record for good."""
        await retry_forever(
            lambda: publish(self._producer, topic, value, key(job_id), what=f"a record of {topic}", headers=headers),
            "write a webhook record", topic=topic, job_id=job_id,
        )

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
        await retry_forever(
            lambda: publish(
                self._producer, self._topics.webhook_status, encode(status), key(delivery.id), what="a delivery status"
            ),
            "write a delivery status", delivery_id=delivery.id,
        )
