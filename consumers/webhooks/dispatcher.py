"""`easel webhooks`: the dispatcher process, one consumer in the group `<prefix>.webhooks`.

It reads the events topic (events → deliveries), the deliveries topic and every retry topic
(deliveries → attempts). Each record is handled in its own task; a record waiting for its due time
simply sleeps. Offsets are committed up to the oldest record not yet finished, so a dispatcher
killed at any moment resumes every pending delivery; at worst an attempt is repeated, with the
same webhook-id. A partition with too many records in hand is paused until they drain.

No record is dropped and none holds the commit point for good: an error of ours while routing an
event or attempting a delivery counts as a failed attempt and is retried on the schedule (then
dead-lettered); a record Kafka refuses for good is dead-lettered without its body; a record that
cannot be read is dead-lettered as it came. While Kafka is away, writes wait for it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import start_http_server
from pydantic import ValidationError

from consumers.kafka import Partitions, Rebalance, commit, group_consumer
from consumers.state_view import StateView
from consumers.webhooks import metrics
from consumers.webhooks.addresses import AddressPolicy
from consumers.webhooks.endpoints import Endpoints
from consumers.webhooks.offsets import OffsetTracker
from consumers.webhooks.outcomes import Outcomes
from consumers.webhooks.router import MissingStatus, Router
from consumers.webhooks.schedule import RetrySchedule
from consumers.webhooks.sender import Attempt, Sender
from consumers.webhooks.signing import Signer
from consumers.webhooks.status_view import DeliveryView
from consumers.webhooks.targets import Targets
from consumers.webhooks.topics import ensure_webhook_topics
from contract.deliveries import RECORD_KIND_HEADER, ROUTE_KIND, Delivery, DeliveryState, PendingRoute
from contract.errors import KafkaUnavailable, RecordRejected
from contract.events import Event
from contract.serialization import decode, encode, key
from contract.settings import Settings
from contract.topics import Topics
from producers import Background, open_producer, publish, retry_forever, send_dead_letter

log = structlog.get_logger(__name__)
HIGH_WATER = 2000  # records in hand per partition before it is paused
LOW_WATER = 1000
COMMIT_EVERY_S = 0.5
# With aiokafka's 16 KiB default, a batch holds about a dozen deliveries; thousands of tasks that
# route or record at once then queue on every full batch and are all woken each time it drains
# (most of the dispatcher's CPU went there). A batch that takes everything produced during one
# round trip removes that wait. Per partition; under the broker's default message.max.bytes (1 MiB).
MAX_BATCH_BYTES = 512 * 1024

Record: TypeAlias = ConsumerRecord[bytes, bytes]


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.schedule = RetrySchedule.from_settings(settings)
        self.policy = AddressPolicy.from_cidrs(settings.webhook_allow_networks)
        self.signer = Signer.from_settings(settings)  # fails fast on a missing or malformed secret
        self.targets = Targets(settings)
        self.view = StateView(settings)
        self.endpoints = Endpoints(settings)
        self.statuses = DeliveryView(settings)  # to skip deliveries already made, when records are read again
        self.router = Router(settings, self.targets, self.view, self.schedule.delays_s[0])
        self.tracker = OffsetTracker()
        self._tasks: dict[TopicPartition, Background] = {}  # the records in hand, by partition
        self._paused: set[TopicPartition] = set()
        # Opened in run().
        self.producer: AIOKafkaProducer
        self.consumer: AIOKafkaConsumer
        self.sender: Sender
        self.outcomes: Outcomes

    async def run(self) -> None:
        await ensure_webhook_topics(self.settings, self.schedule)
        if self.settings.webhook_metrics_port:
            start_http_server(self.settings.webhook_metrics_port, addr=self.settings.host)
        producer = await open_producer(self.settings, "easel-webhooks", max_batch_bytes=MAX_BATCH_BYTES)
        sender = Sender(
            self.policy, self.signer, self.settings.webhook_timeout_s,
            self.settings.webhook_concurrency, self.settings.webhook_host_concurrency,
        )
        self.producer, self.sender = producer, sender
        self.outcomes = Outcomes(producer, self.topics, self.schedule, self.endpoints)
        sources = [self.topics.events, self.topics.webhook_deliveries]
        self.consumer = consumer = group_consumer(
            self.settings,
            [*sources, *(self.topics.webhook_retries(d) for d in self.schedule.tiers_ms)],
            group_id=self.topics.webhook_group,
            client_id="easel-webhooks",
            instance_id=self.settings.webhook_dispatcher_id,
            rebalance=Rebalance(on_revoked=self.revoked),
        )
        try:
            await self.targets.start()
            await self.view.start()
            await self.endpoints.start()
            await self.statuses.start()
            await consumer.start()
            log.info("webhook dispatcher ready", attempts=self.schedule.attempts, retry_topics=self.schedule.tiers_ms)
            await self._consume()
        finally:
            await self._commit()
            await self._cancel(set(self._tasks))
            await consumer.stop()
            await self.statuses.stop()
            await self.endpoints.stop()
            await self.view.stop()
            await self.targets.stop()
            await sender.close()
            await producer.stop()

    async def _consume(self) -> None:
        committed_at = time.monotonic()
        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                in_hand = self._tasks.get(tp) or self._tasks.setdefault(tp, Background(f"webhook records of {tp}"))
                for record in records:
                    self.tracker.opened(tp, record.offset)
                    in_hand.spawn(self._handle(tp, record))
            self._flow_control()
            metrics.IN_FLIGHT.set(self.tracker.total_in_flight())
            if time.monotonic() - committed_at >= COMMIT_EVERY_S:
                await self._commit()
                committed_at = time.monotonic()

    async def _handle(self, tp: TopicPartition, record: Record) -> None:
        try:
            await self._process(record)
        except asyncio.CancelledError:
            raise  # revoked or stopping: left open, so it is read again
        except Exception as exc:  # the retry path itself failed: keep the record, whole, as a dead letter
            await self._last_resort(record, exc)
        self.tracker.closed(tp, record.offset)

    async def _process(self, record: Record) -> None:
        """Route an event, route one again, or attempt a delivery. Errors of ours are retried on the schedule."""
        if record.topic == self.topics.events:
            try:
                event = decode(Event, record.value or b"")
            except (ValidationError, ValueError):
                log.warning("unreadable event skipped", offset=record.offset)  # no job to tell, no webhook to know
                return
            await self._route(PendingRoute(event=event, attempt=0))
        elif (RECORD_KIND_HEADER, ROUTE_KIND) in record.headers:
            pending = decode(PendingRoute, record.value or b"")
            if (wait_s := pending.due_at - time.time()) > 0:
                await asyncio.sleep(wait_s)
            await self._route(pending)
        else:
            await self._deliver(decode(Delivery, record.value or b""))

    async def _route(self, pending: PendingRoute) -> None:
        try:
            delivery = await self.router.route(pending.event, pending.attempt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, a status not there yet, Kafka away: counted as a failed attempt
            log.warning("webhook routing failed", job_id=pending.event.job_id, seq=pending.event.seq,
                        error=repr(exc)[:200], exc_info=not isinstance(exc, MissingStatus | KafkaUnavailable))
            await self.outcomes.route_failed(pending, f"internal: {type(exc).__name__}")
            return
        if delivery is not None:
            await self._enqueue(delivery)

    async def _enqueue(self, delivery: Delivery) -> None:
        topic, value = self.topics.webhook_deliveries, encode(delivery)
        try:
            await retry_forever(
                lambda: publish(self.producer, topic, value, key(delivery.job_id), what="a webhook delivery"),
                "queue a webhook delivery", delivery_id=delivery.id,
            )
        except RecordRejected as exc:
            await self.outcomes.refused(delivery, str(exc))

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            await self._attempt(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours (e.g. no secret for this key) still counts as a failed try
            log.exception("webhook attempt failed unexpectedly", job_id=delivery.job_id, delivery_id=delivery.id)
            await self.outcomes.record(delivery, Attempt(error=f"internal: {type(exc).__name__}"))

    async def _attempt(self, delivery: Delivery) -> None:
        # Fields passed explicitly rather than bound as contextvars: binding cost more per delivery than the log calls.
        ids = {"job_id": delivery.job_id, "track_id": delivery.track_id, "delivery_id": delivery.id}
        if (wait_s := delivery.due_at - time.time()) > 0:
            await asyncio.sleep(wait_s)
        if self._delivered_before(delivery):
            log.info("webhook already delivered; record read again after a restart", **ids)
            return
        if (reason := await self.endpoints.disabled(delivery.url)) is not None:
            log.info("webhook not sent: endpoint disabled", reason=reason, **ids)
            await self.outcomes.skip_disabled(delivery, reason)
            return
        await self.outcomes.record(delivery, await self.sender.send(delivery))

    async def _last_resort(self, record: Record, exc: Exception) -> None:
        """A record that could not be read or whose failure could not be recorded: dead-lettered as it came."""
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        log.error("webhook record dead-lettered as it came", error=repr(exc)[:200], exc_info=exc, **where)
        reason = f"webhook dispatcher: {type(exc).__name__}"
        try:
            await retry_forever(
                lambda: send_dead_letter(self.producer, self.topics, record, reason), "dead-letter a webhook record"
            )
        except Exception:  # refused for good, or worse: nothing more can be done but say so
            metrics.DELIVERIES.labels("lost").inc()
            log.exception("webhook record lost", **where)

    def _delivered_before(self, delivery: Delivery) -> bool:
        status = self.statuses.get(delivery.id)
        return status is not None and status.state is DeliveryState.DELIVERED and status.replay >= delivery.replay

    def _flow_control(self) -> None:
        for tp in self.consumer.assignment():
            in_hand = self.tracker.in_flight(tp)
            if tp not in self._paused and in_hand >= HIGH_WATER:
                self.consumer.pause(tp)
                self._paused.add(tp)
            elif tp in self._paused and in_hand <= LOW_WATER:
                self.consumer.resume(tp)
                self._paused.discard(tp)

    async def _commit(self, partitions: Partitions | None = None) -> None:
        points = self.tracker.to_commit(partitions)
        if points and await commit(self.consumer, points):
            self.tracker.committed(points)

    async def _cancel(self, partitions: Partitions) -> None:
        await asyncio.gather(*(self._tasks.pop(tp).stop() for tp in partitions & self._tasks.keys()))

    async def revoked(self, partitions: Partitions) -> None:
        await self._commit(partitions)
        await self._cancel(partitions)
        self.tracker.forget(partitions)
        self._paused -= partitions
