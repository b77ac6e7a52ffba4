"""The one way Easel opens a Kafka producer: idempotent, acks=all, started (or stopped again on failure)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from contract.settings import Settings
from producers.kafka_security import client_security

# Up to this much of one partition's records go in one batch. aiokafka keeps one request in flight per broker and
# drains one batch per partition into it, so at its own default (16 KiB, ~25 job records) a burst of submits
# queued behind several round trips; a batch only grows while records wait, so a quiet producer sends the same.
DEFAULT_BATCH_BYTES = 512 * 1024
# How long Kafka lets a transaction stay open before it aborts it. Ours hold one job's outcome and last
# milliseconds; an open one holds every read_committed reader back, so one left by a crash must not last.
TRANSACTION_TIMEOUT_MS = 20_000


async def open_producer(
    settings: Settings,
    client_id: str,
    *,
    linger_ms: int = 0,
    max_batch_bytes: int = DEFAULT_BATCH_BYTES,
    transactional_id: str | None = None,
) -> AIOKafkaProducer:
    """A started producer. `linger_ms` and `max_batch_bytes` trade latency for throughput; they change
    neither acks nor idempotence. The per-record cap (max_request_size) stays at Kafka's 1 MiB.

    With a `transactional_id`, starting it fences every earlier producer under that id and aborts the
    transaction such a producer left open."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        client_id=client_id,
        enable_idempotence=True,  # forces acks=all and de-duplicates the producer's own retries
        linger_ms=linger_ms,
        max_batch_size=max_batch_bytes,
        request_timeout_ms=int(settings.submit_timeout_s * 1000) + 5000,
        transactional_id=transactional_id,
        transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        **client_security(settings),
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer
