"""Dead letters: messages that could not be used, kept with the reason and where they came from."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from contract.topics import Topics
from producers.publish import Headers, publish


def dead_letter_headers(record: ConsumerRecord[bytes, bytes], reason: str) -> Headers:
    """Why a record was dead-lettered, and where it came from."""
    return [
        ("easel-reason", reason.encode()[:1000]),
        ("easel-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]


async def send_dead_letter(
    producer: AIOKafkaProducer, topics: Topics, record: ConsumerRecord[bytes, bytes], reason: str
) -> None:
    """Raises KafkaUnavailable or RecordRejected when Kafka does not take it."""
    headers = dead_letter_headers(record, reason)
    await publish(producer, topics.dead_letters, record.value, record.key, what="a dead letter", headers=headers)
