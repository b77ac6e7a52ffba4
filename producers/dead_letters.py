"""Dead letters: messages that could not be used, kept with the reason and where they came from."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from contract.topics import Topics


async def send_dead_letter(
    producer: AIOKafkaProducer, topics: Topics, record: ConsumerRecord[bytes, bytes], reason: str
) -> None:
    headers = [
        ("easel-reason", reason.encode()[:1000]),
        ("easel-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]
    await (await producer.send(topics.dead_letters, record.value, key=record.key, headers=headers))
