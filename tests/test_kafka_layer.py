"""The Kafka layer against the real broker: how publishing classifies Kafka's refusals, where a
TopicMirror starts, and the background-task owner and retry helper everything else builds on."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from structlog.testing import capture_logs

from consumers.topic_mirror import StartAt, TopicMirror
from contract.errors import KafkaUnavailable, RecordRejected
from contract.settings import Settings
from contract.topics import TopicSpec
from easel.local_kafka import LocalKafka
from producers import Background, ensure_topics, open_producer, publish, retry_forever
from tests.conftest import HOME
from tests.processes import free_port

TOPIC_LIMIT_BYTES = 2048


@pytest.fixture
def settings(kafka: LocalKafka) -> Settings:
    return Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=f"layer-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = await open_producer(settings, "test-kafka-layer")
    yield producer
    await producer.stop()


async def new_topic(settings: Settings, name: str, configs: dict[str, str] | None = None) -> str:
    topic = f"{settings.topic_prefix}.{name}"
    await ensure_topics(settings, [TopicSpec(topic, 1, configs or {})])
    return topic


async def test_a_record_within_limits_is_acknowledged(settings: Settings, producer: AIOKafkaProducer) -> None:
    topic = await new_topic(settings, "small", {"max.message.bytes": str(TOPIC_LIMIT_BYTES)})
    await publish(producer, topic, b"x" * 100, b"k", what="a small record")


async def test_a_record_over_the_topics_size_limit_is_rejected_at_once(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(settings, "limited", {"max.message.bytes": str(TOPIC_LIMIT_BYTES)})
    # The broker refuses it (MESSAGE_TOO_LARGE). Running into the deadline would be KafkaUnavailable.
    with pytest.raises(RecordRejected, match="MessageSizeTooLargeError"):
        await publish(producer, topic, b"x" * (4 * TOPIC_LIMIT_BYTES), b"k", what="a large record", within_s=120)
    # The producer goes on: the next record to the same partition lands.
    await publish(producer, topic, b"x" * 100, b"k", what="a small record", within_s=120)


async def test_a_record_over_the_producers_size_limit_is_rejected_at_once(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(settings, "huge")
    with pytest.raises(RecordRejected, match="a huge record"):
        await publish(producer, topic, b"x" * (2 * 1024 * 1024), b"k", what="a huge record", within_s=120)


async def test_a_topic_that_does_not_exist_is_retried_until_the_deadline(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    # Topics are never created on the fly here: the metadata wait times out, a retriable error.
    with pytest.raises(KafkaUnavailable, match="the lost record"):
        await publish(producer, f"{settings.topic_prefix}.missing", b"x", b"k", what="the lost record", within_s=2)


@pytest.mark.slow
async def test_a_stopped_broker_gives_kafka_unavailable_within_the_deadline(tmp_path: Path) -> None:
    broker = LocalKafka(HOME, port=free_port(), controller_port=free_port())
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    await asyncio.to_thread(broker.start)
    try:
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix="stopping")
        topic = await new_topic(settings, "t")
        producer = await open_producer(settings, "test-stopped-broker")
        try:
            await publish(producer, topic, b"before", b"k", what="a record")
            await asyncio.to_thread(broker.stop)
            with pytest.raises(KafkaUnavailable, match="did not acknowledge a record in time"):
                await publish(producer, topic, b"after", b"k", what="a record", within_s=3)
        finally:
            # The producer holds the unacknowledged record and would wait for a broker to stop.
            await asyncio.to_thread(broker.start)
            await producer.stop()
    finally:
        await asyncio.to_thread(broker.stop)
        shutil.rmtree(broker.data_dir, ignore_errors=True)


async def test_a_mirror_starts_at_the_beginning_or_at_a_time(settings: Settings, producer: AIOKafkaProducer) -> None:
    topic = await new_topic(settings, "mirrored")
    now_ms = int(time.time() * 1000)
    for value, age_ms in ((b"old", 600_000), (b"older-but-later", 900_000), (b"recent", 1_000), (b"newest", 0)):
        await producer.send_and_wait(topic, value, key=value, timestamp_ms=now_ms - age_ms)

    async def mirrored(at: StartAt) -> list[bytes | None]:
        seen: list[bytes | None] = []
        mirror = TopicMirror(settings, topic, lambda _key, value: seen.append(value), "test-mirror")
        await mirror.start(at)
        await mirror.stop()
        return seen

    assert await mirrored(StartAt()) == [b"old", b"older-but-later", b"recent", b"newest"]
    # From the first record stamped at or after the time, in offset order (as Kafka's time index finds it).
    assert await mirrored(StartAt(since_ms=now_ms - 300_000)) == [b"recent", b"newest"]
    assert await mirrored(StartAt.seconds_ago(700)) == [b"old", b"older-but-later", b"recent", b"newest"]


async def test_a_mirror_started_after_everything_follows_what_comes_next(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    topic = await new_topic(settings, "later")
    await producer.send_and_wait(topic, b"before", timestamp_ms=int(time.time() * 1000) - 60_000)
    seen: list[bytes | None] = []
    mirror = TopicMirror(settings, topic, lambda _key, value: seen.append(value), "test-mirror")
    await mirror.start(StartAt.seconds_ago(1))
    try:
        assert seen == []
        await producer.send_and_wait(topic, b"after")
        await mirror.sync()
        assert seen == [b"after"]
    finally:
        await mirror.stop()


async def test_a_mirror_that_is_not_connected_says_kafka_is_unavailable(settings: Settings) -> None:
    mirror = TopicMirror(settings, f"{settings.topic_prefix}.none", lambda _key, _value: None, "test-mirror")
    with pytest.raises(KafkaUnavailable, match="not connected"):
        await mirror.sync()


async def test_background_stop_cancels_and_awaits_every_task_and_logs_failures() -> None:
    background = Background("test")
    ended: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append("forever")

    async def broken() -> None:
        raise ValueError("a bug")

    with capture_logs() as logs:
        background.spawn(forever())
        failing = background.spawn(broken())
        await asyncio.wait([failing])
        await background.stop()
    assert ended == ["forever"]
    assert len(background) == 0
    assert [entry["event"] for entry in logs] == ["background task failed"]


async def test_retry_forever_tries_again_until_it_works_and_never_on_a_rejected_record() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise KafkaUnavailable("not yet")
        return "done"

    with capture_logs() as logs:
        assert await retry_forever(flaky, "a flaky write") == "done"
    assert len(calls) == 3
    assert [entry["event"] for entry in logs] == ["Kafka not reachable, retrying", "Kafka reachable again"]

    async def rejected() -> None:
        calls.append(1)
        raise RecordRejected("too large")

    calls.clear()
    with pytest.raises(RecordRejected):
        await retry_forever(rejected, "a doomed write")
    assert len(calls) == 1
