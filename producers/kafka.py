"""The one way Easel opens a Kafka producer: idempotent, acks=all, started (or stopped again on failure)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from contract.settings import Settings

DEFAULT_BATCH_BYTES = 16 * 1024  # aiokafka's own default


async def open_producer(
    settings: Settings, client_id: str, *, linger_ms: int = 0, max_batch_bytes: int = DEFAULT_BATCH_BYTES
) -> AIOKafkaProducer:
    """A started producer. `linger_ms` and `max_batch_bytes` trade latency for throughput; they change
    neither acks nor idempotence. The per-record cap (max_request_size) stays at Kafka's 1 MiB."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        client_id=client_id,
        enable_idempotence=True,  # forces acks=all and de-duplicates the producer's own retries
        linger_ms=linger_ms,
        max_batch_size=max_batch_bytes,
        request_timeout_ms=int(settings.submit_timeout_s * 1000) + 5000,
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer
