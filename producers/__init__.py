"""Writing to Kafka (job submission, job events, dead letters), and the plumbing every Easel process
shares with Kafka: one producer factory, one publish helper that classifies Kafka's refusals, one
backoff policy with a retry-forever helper, one owner for background tasks. Usable as a library."""

from contract.errors import KafkaUnavailable, RecordRejected
from producers.background import Background
from producers.dead_letters import send_dead_letter
from producers.events import EventWriter
from producers.jobs import JobProducer
from producers.kafka import open_producer
from producers.publish import deadline, enqueue, publish
from producers.retry import retry_forever
from producers.topics import ensure_topics

__all__ = [
    "Background",
    "EventWriter",
    "JobProducer",
    "KafkaUnavailable",
    "RecordRejected",
    "deadline",
    "enqueue",
    "ensure_topics",
    "open_producer",
    "publish",
    "retry_forever",
    "send_dead_letter",
]
