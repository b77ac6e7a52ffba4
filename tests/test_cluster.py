"""A three-broker KRaft cluster: topics on three replicas, two in sync, and a broker killed in the middle of a burst
loses no job the API accepted.

The cluster and the stack (an API and a runner, EASEL_REPLICATION_FACTOR=3, every node in the bootstrap list) are
this module's own. The broker killed (SIGKILL: no controlled shutdown) is the leader of the events topic, which
every accepted job's `queued` and terminal event go through.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from contract.events import Event, EventType
from contract.serialization import decode
from contract.topics import Topics
from easel.local_kafka import LocalKafkaCluster
from tests.cluster import own_cluster
from tests.kafka_io import Records, read_topic
from tests.processes import HOME, Stack, make_stack

JOB = {"prompt": "a lighthouse in a storm", "width": 64, "height": 64, "steps": 2}
BURST = 30
KILL_AFTER = 10  # submits answered before the broker is killed
INTERNAL_TOPICS = ["__consumer_offsets", "__transaction_state"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalKafkaCluster]:
    with own_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def stack(cluster: LocalKafkaCluster, tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(cluster.bootstrap, tmp_path_factory.mktemp("cluster"), "cluster", HOME)
    stack.env.update(EASEL_REPLICATION_FACTOR="3", EASEL_PREVIEW_EVERY="0")
    with stack.serving() as serving:
        yield serving


async def describe(bootstrap: str, topics: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each topic's partitions (leader, replicas, isr)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: t["partitions"] for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()


async def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        ((error, _, _, _, entries),) = response.resources
        assert error == 0
        return {entry[0]: entry[1] for entry in entries}
    finally:
        await admin.close()


def test_every_topic_has_three_replicas_and_needs_two_in_sync(cluster: LocalKafkaCluster, stack: Stack) -> None:
    topics = Topics(stack.prefix)
    names = [spec.name for spec in topics.specs(request_partitions=4)]
    described = asyncio.run(describe(cluster.bootstrap, names))
    assert set(described) == set(names)
    for name in names:
        for partition in described[name]:
            assert len(partition["replicas"]) == 3, (name, partition)
        assert asyncio.run(topic_configs(cluster.bootstrap, name))["min.insync.replicas"] == "2", name
    # Retention tombstones leave the compacted state topic an hour after compaction.
    assert asyncio.run(topic_configs(cluster.bootstrap, topics.state))["delete.retention.ms"] == str(3600 * 1000)


def terminal_events(records: Records) -> dict[str, list[EventType]]:
    """Each job's terminal event types, in the order they were written."""
    ends: dict[str, list[EventType]] = {}
    for record in records:
        event = decode(Event, record.value)
        if event.type.is_terminal:
            ends.setdefault(event.job_id, []).append(event.type)
    return ends


def test_a_broker_killed_mid_burst_loses_no_accepted_job(cluster: LocalKafkaCluster, stack: Stack) -> None:
    topics = Topics(stack.prefix)
    events = topics.events
    described = asyncio.run(describe(cluster.bootstrap, [s.name for s in topics.specs(4)] + INTERNAL_TOPICS))
    victim = cluster.node(described[events][0]["leader"])
    # What else it leads (the group and transaction coordinators are the leaders of the internal topics).
    led = [f"{name}-{p['partition']}" for name, ps in described.items() for p in ps if p["leader"] == victim.node_id]
    answers: Counter[int] = Counter()
    accepted: list[str] = []
    unconfirmed: list[str] = []  # 503 with X-Job-Id: it either runs or ends FAILED, never silently lost
    headers = {"Authorization": f"Bearer {stack.key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as client:
        for i in range(BURST):
            if i == KILL_AFTER:
                victim.kill()
            answer = client.post("/v1/jobs", json={**JOB, "seed": i})
            answers[answer.status_code] += 1
            if answer.status_code == 202:
                accepted.append(answer.json()["id"])
            elif answer.status_code == 503 and "x-job-id" in answer.headers:
                unconfirmed.append(answer.headers["x-job-id"])
            else:
                assert answer.status_code == 503, answer.text  # Kafka unavailable: nothing happened
    print(f"killed node {victim.node_id}, leader of {led}; answers {dict(answers)}")
    assert len(accepted) >= KILL_AFTER

    # Every job finishes with one broker down (two of three replicas are enough for every write).
    followed = accepted + unconfirmed
    records = asyncio.run(
        read_topic(
            cluster.bootstrap, events, lambda rs: set(followed) <= set(terminal_events(rs)), timeout_s=240, linger_s=2
        )
    )
    ends = terminal_events(records)
    assert {job_id: ends[job_id] for job_id in accepted} == {job_id: [EventType.COMPLETED] for job_id in accepted}
    for job_id in unconfirmed:
        assert ends[job_id] in ([EventType.COMPLETED], [EventType.FAILED]), job_id
    print(f"unconfirmed submits ended {[ends[job_id][0].value for job_id in unconfirmed]}")

    # The killed broker comes back into the cluster, and the internal topics were replicated on all three.
    victim.start()
    for name, partitions in asyncio.run(describe(cluster.bootstrap, INTERNAL_TOPICS)).items():
        assert all(len(p["replicas"]) == 3 for p in partitions), (name, partitions)
