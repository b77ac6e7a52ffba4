"""Writing to Kafka: job submission and job events. Usable as a library."""

from producers.dead_letters import send_dead_letter
from contract.errors import KafkaUnavailable
from producers.events import EventWriter
from producers.jobs import JobProducer
from producers.kafka import open_producer
from producers.topics import ensure_topics

__all__ = ["EventWriter", "JobProducer", "KafkaUnavailable", "ensure_topics", "open_producer", "send_dead_letter"]
