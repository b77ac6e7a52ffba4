"""The one way Easel builds a Kafka producer: idempotent, acks=all."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from contract.settings import Settings


def new_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    # enable_idempotence forces acks=all and de-duplicates the producer's own retries.
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        linger_ms=0,
        request_timeout_ms=int(settings.submit_timeout_s * 1000) + 5000,
    )


async def open_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    producer = new_producer(settings, client_id)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer
