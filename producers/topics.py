"""Create Easel's topics idempotently, with explicit configs, and grow their partitions to what is configured.

Each topic gets `settings.replication_factor` replicas and the `min.insync.replicas` that goes with it (2 from
three replicas on): with the producers' acks=all, an acknowledged record is on two brokers.
"""

from __future__ import annotations

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic

from contract.catalog import Catalog
from contract.settings import Settings
from contract.topics import Topics, TopicSpec, min_insync_replicas
from producers.kafka_security import client_security

TOPIC_ALREADY_EXISTS = 36
log = structlog.get_logger(__name__)


async def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> None:
    """Create the job topics (every configured model's request topic among them) or the given `specs` that do not
    exist yet, with their configs; give existing ones the partitions they lack (EASEL_REQUEST_PARTITIONS raised on
    a running cluster: more runners work).

    Kafka cannot take partitions away: a topic with more than configured keeps them. A topic of a model no longer
    configured is left as it is.
    """
    wanted = specs if specs is not None else job_topic_specs(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap, client_id="easel-admin", **client_security(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await _grow(admin, [spec for spec in wanted if spec.name in existing])
        missing = [spec for spec in wanted if spec.name not in existing]
        if not missing:
            return
        replicas = settings.replication_factor
        durability = {"min.insync.replicas": str(min_insync_replicas(replicas))}
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, replicas, topic_configs={**durability, **s.configs}) for s in missing]
        )
        # create_topics does not raise on per-topic failures: inspect every one.
        for name, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"could not create topic {name}: error {code} {message}")
        log.info("topics created", topics=[s.name for s in missing])
    finally:
        await admin.close()


def job_topic_specs(settings: Settings) -> list[TopicSpec]:
    routed = Catalog.from_settings(settings).routed
    return Topics(settings.topic_prefix).specs(settings.request_partitions, routed)


async def _grow(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    if not specs:
        return
    counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics([s.name for s in specs])}
    short = {s.name: s.partitions for s in specs if counts.get(s.name, s.partitions) < s.partitions}
    if short:
        await admin.create_partitions({name: NewPartitions(total) for name, total in short.items()})
        log.info("partitions added", topics={name: f"{counts[name]} -> {total}" for name, total in short.items()})
