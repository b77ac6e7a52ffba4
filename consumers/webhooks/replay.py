"""`easel webhooks replay`: send dead-lettered deliveries again (all, or those of one job or one URL).

A replay keeps the webhook-id and body, restarts the attempt count, re-enables the endpoints it
sends to (after a 410), and is skipped for deliveries already replayed or delivered since, so
running it twice sends nothing twice. A dead letter whose record Kafka refused carries no body
(`dropped_body_bytes`): there is nothing to re-send, so it is listed in the log and left.
"""

from __future__ import annotations

import time

import structlog
from pydantic import ValidationError

from consumers.topic_mirror import TopicMirror
from consumers.webhooks.endpoints import enable
from consumers.webhooks.status_view import DeliveryView
from contract.deliveries import Delivery, DeliveryState, DeliveryStatus
from contract.serialization import decode, encode, key
from contract.settings import Settings
from contract.topics import Topics
from producers import open_producer, publish

log = structlog.get_logger(__name__)


async def replay(settings: Settings, job_id: str | None = None, url: str | None = None) -> list[Delivery]:
    """Replay matching dead letters; returns what was replayed."""
    topics = Topics(settings.topic_prefix)
    dead = await _dead_letters(settings, topics)
    statuses = DeliveryView(settings)
    await statuses.start()
    try:
        chosen = [
            d for d in dead.values()
            if (job_id is None or d.job_id == job_id) and (url is None or d.url == url) and _still_dead(statuses, d)
        ]
    finally:
        await statuses.stop()
    for bodiless in (d for d in chosen if d.dropped_body_bytes is not None):
        log.warning("not replayable: its body was dropped when Kafka refused it", delivery_id=bodiless.id,
                    job_id=bodiless.job_id, body_bytes=bodiless.dropped_body_bytes, reason=bodiless.error)
    chosen = [d for d in chosen if d.dropped_body_bytes is None]
    producer = await open_producer(settings, "easel-webhook-replay")
    try:
        for endpoint in sorted({d.url for d in chosen}):
            await enable(producer, topics, endpoint)  # written before the deliveries, so they see it
        now = time.time()
        for d in chosen:
            again = d.model_copy(update={"attempt": 0, "replay": d.replay + 1, "due_at": now, "error": None})
            pending = DeliveryStatus(
                id=d.id, job_id=d.job_id, event=d.event, seq=d.seq, state=DeliveryState.PENDING,
                attempts=0, replay=again.replay, next_attempt_at=now,
            )
            await publish(producer, topics.webhook_status, encode(pending), key(d.id), what="a delivery status")
            await publish(producer, topics.webhook_deliveries, encode(again), key(d.job_id), what="a webhook delivery")
    finally:
        await producer.stop()
    return chosen


async def _dead_letters(settings: Settings, topics: Topics) -> dict[str, Delivery]:
    """The latest dead letter of each delivery, read to the topic's current end."""
    latest: dict[str, Delivery] = {}

    def apply(raw_key: bytes | None, raw_value: bytes | None) -> None:
        try:
            delivery = decode(Delivery, raw_value or b"")
        except (ValidationError, ValueError):
            log.warning("unreadable webhook dead letter skipped")
            return
        if (current := latest.get(delivery.id)) is None or delivery.replay >= current.replay:
            latest[delivery.id] = delivery

    mirror = TopicMirror(settings, topics.webhook_dead_letters, apply, "easel-webhook-replay")
    await mirror.start()
    await mirror.stop()
    return latest


def _still_dead(statuses: DeliveryView, delivery: Delivery) -> bool:
    status = statuses.get(delivery.id)
    return status is None or (status.state is DeliveryState.FAILED and status.replay == delivery.replay)
