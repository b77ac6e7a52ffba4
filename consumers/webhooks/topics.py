"""Create the dispatcher's topics idempotently: deliveries, a retry topic per delay, status, endpoints, dead letters."""

from __future__ import annotations

from consumers.webhooks.schedule import RetrySchedule
from contract.settings import Settings
from contract.topics import Topics
from producers.topics import ensure_topics


async def ensure_webhook_topics(settings: Settings, schedule: RetrySchedule) -> None:
    await ensure_topics(settings)  # the job topics the dispatcher reads
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics.webhook_specs(settings.webhook_partitions, schedule.tiers_ms))
