"""`ensure_topics` (what `easel topics` and every process run at start) on a real broker."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka.admin import AIOKafkaAdminClient

from contract.settings import Settings
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from producers import ensure_topics


async def partitions(bootstrap: str, topic: str, expected: int) -> int:
    """The topic's partition count once it is `expected`, or what it is after 10 s (metadata propagates)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(100):
            (described,) = await admin.describe_topics([topic])
            if len(described["partitions"]) == expected:
                break
            await asyncio.sleep(0.1)
        return len(described["partitions"])
    finally:
        await admin.close()


async def test_raising_request_partitions_grows_the_existing_topic_and_never_shrinks_it(kafka: LocalKafka) -> None:
    settings = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=f"grow-{uuid.uuid4().hex[:8]}")
    requests = Topics(settings.topic_prefix).requests
    await ensure_topics(settings.replace(request_partitions=2))
    assert await partitions(kafka.bootstrap, requests, 2) == 2
    await ensure_topics(settings.replace(request_partitions=5))  # more runners on a running cluster
    assert await partitions(kafka.bootstrap, requests, 5) == 5
    await ensure_topics(settings.replace(request_partitions=3))  # Kafka cannot take partitions away
    assert await partitions(kafka.bootstrap, requests, 5) == 5  # and no error
