"""A runner takes one job at a time from its partitions in turn: one partition's backlog holds no other back.

The backlog and the lone job are on the requests topic before the runner starts, so its first fetch holds
both partitions; a runner that drained one partition's fetch before the next would run the lone job last.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from contract.serialization import decode
from contract.settings import Settings
from contract.states import JobState, JobStatus
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from producers import ensure_topics
from tests.conftest import HOME
from tests.kafka_io import Records, read_topic
from tests.processes import Stack, make_stack

BACKLOG = 6


@pytest.fixture
def runnerless_stack(kafka: LocalKafka, tiny_model: str, tmp_path: Path) -> Iterator[Stack]:
    stack = make_stack(kafka.bootstrap, tmp_path, f"fair-{uuid.uuid4().hex[:6]}", HOME)
    try:
        yield stack
    finally:
        stack.stop()


async def produce_to(bootstrap: str, topic: str, jobs: list[tuple[int, dict[str, object]]]) -> None:
    """Each job to its partition, in order, acknowledged before returning."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for partition, job in jobs:
            job_id = str(job["id"]).encode()
            await producer.send_and_wait(topic, orjson.dumps(job), key=job_id, partition=partition)
    finally:
        await producer.stop()


def final_statuses(records: Records) -> dict[str, JobStatus]:
    """Each job's newest status on the state topic."""
    statuses: dict[str, JobStatus] = {}
    for record in records:
        if record.value is not None:
            status = decode(JobStatus, record.value)
            statuses[status.job_id] = status
    return statuses


@pytest.mark.slow
async def test_a_lone_job_on_another_partition_starts_before_a_backlog_is_drained(runnerless_stack: Stack) -> None:
    stack = runnerless_stack
    bootstrap = stack.env["EASEL_KAFKA_BOOTSTRAP"]
    topics = Topics(stack.prefix)
    await ensure_topics(Settings.from_env(stack.env))

    def job(name: str) -> dict[str, object]:
        return {"id": name, "owner": "tester", "prompt": "x", "width": 64, "height": 64, "steps": 2, "seed": 1}

    backlog = [(0, job(f"backlog-{i}")) for i in range(BACKLOG)]
    await produce_to(bootstrap, topics.requests, [*backlog, (1, job("lone"))])
    stack.start_runner("runner-fair")

    def all_finished(records: Records) -> bool:
        statuses = final_statuses(records)
        return len(statuses) == BACKLOG + 1 and all(s.is_terminal for s in statuses.values())

    statuses = final_statuses(await read_topic(bootstrap, topics.state, all_finished, timeout_s=120))
    assert {s.state for s in statuses.values()} == {JobState.COMPLETED}
    started = sorted(statuses, key=lambda job_id: statuses[job_id].started_at or 0.0)
    assert started.index("lone") < BACKLOG, started  # at least one backlog job started after it
    # In turn: one of the first the runner took, however its first fetches fell.
    assert started.index("lone") <= 2, started
