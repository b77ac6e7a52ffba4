"""The dispatcher's producer: Easel's usual one (idempotent, acks=all) with room for large batches.

With aiokafka's 16 KiB default, a batch holds about a dozen deliveries; thousands of tasks that
route or record at once then queue on every full batch and are all woken each time it drains
(most of the dispatcher's CPU went there). A batch that takes everything produced during one
round trip removes that wait; it changes neither acks nor idempotence.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from contract.settings import Settings

# Per partition; under the broker's default message.max.bytes (1 MiB). The per-record cap
# (max_request_size) stays at its 1 MiB default.
MAX_BATCH_BYTES = 512 * 1024


async def open_dispatcher_producer(settings: Settings) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        client_id="easel-webhooks",
        enable_idempotence=True,  # acks=all, and the producer's own retries are de-duplicated
        linger_ms=0,
        max_batch_size=MAX_BATCH_BYTES,
        request_timeout_ms=int(settings.submit_timeout_s * 1000) + 5000,
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer
