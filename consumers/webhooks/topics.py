"""Create the dispatcher's topics idempotently: deliveries, a retry topic per delay, status, endpoints, dead letters."""

from __future__ import annotations

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumers.webhooks.schedule import RetrySchedule
from contract.settings import Settings
from contract.topics import Topics
from producers.topics import TOPIC_ALREADY_EXISTS, ensure_topics

log = structlog.get_logger(__name__)


async def ensure_webhook_topics(settings: Settings, schedule: RetrySchedule) -> None:
    await ensure_topics(settings)  # the job topics the dispatcher reads
    wanted = Topics(settings.topic_prefix).webhook_specs(settings.webhook_partitions, schedule.tiers_ms)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id="easel-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in wanted if spec.name not in existing]
        if not missing:
            return
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, settings.replication_factor, topic_configs=s.configs) for s in missing]
        )
        for name, code, message in response.topic_errors:  # per-topic failures are not raised
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"could not create topic {name}: error {code} {message}")
        log.info("webhook topics created", topics=[s.name for s in missing])
    finally:
        await admin.close()
