"""Faults: Kafka unreachable or gone, and a runner killed in the middle of a job."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from contract.events import EventType
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from tests.conftest import HOME
from tests.kafka_io import job_events
from tests.processes import Stack, free_port, make_stack

JOB = {"prompt": "a slow one", "width": 64, "height": 64, "steps": 2}


StackFactory = Callable[[str, str], Stack]


@pytest.fixture
def new_stack(tmp_path: Path) -> Iterator[StackFactory]:
    """Stacks of this test's own (bootstrap, topic prefix), stopped afterwards."""
    stacks: list[Stack] = []

    def start(bootstrap: str, prefix: str) -> Stack:
        stack = make_stack(bootstrap, tmp_path / prefix, prefix, HOME)
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()


def test_kafka_unreachable_gives_503_not_a_hang(new_stack: StackFactory, tiny_model: str) -> None:
    closed_port = free_port()  # nothing listens here
    stack = new_stack(f"127.0.0.1:{closed_port}", "nokafka")
    api = stack.start_api(healthy=False)
    assert api.process.poll() is None
    headers = {"Authorization": f"Bearer {stack.key}"}
    health = httpx.get(f"{stack.base_url}/health", timeout=10)
    assert health.status_code == 503
    submit = httpx.post(f"{stack.base_url}/v1/jobs", json=JOB, headers=headers, timeout=15)
    assert submit.status_code == 503
    assert submit.json()["error"]["code"] == "kafka_unavailable"
    assert submit.headers["retry-after"] == "5"
    assert httpx.get(f"{stack.base_url}/v1/jobs/x", headers=headers, timeout=10).status_code == 503


def test_kafka_stopping_under_a_running_api_gives_503(new_stack: StackFactory, tiny_model: str) -> None:
    port = free_port()
    broker = LocalKafka(HOME, port=port, controller_port=free_port())
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    broker.start()
    try:
        stack = new_stack(broker.bootstrap, "vanishing")
        stack.start_api()
        headers = {"Authorization": f"Bearer {stack.key}"}
        assert httpx.post(f"{stack.base_url}/v1/jobs", json=JOB, headers=headers, timeout=15).status_code == 202
        broker.stop()
        submit = httpx.post(f"{stack.base_url}/v1/jobs", json=JOB, headers=headers, timeout=30)
        assert submit.status_code == 503
        assert "Kafka" in submit.json()["error"]["message"]
    finally:
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)


@pytest.mark.slow
async def test_runner_killed_mid_job_finishes_it_after_restart_with_one_outcome(
    new_stack: StackFactory, kafka: LocalKafka, tiny_model: str
) -> None:
    stack = new_stack(kafka.bootstrap, "crash")
    stack.start_api()
    runner = stack.start_runner("crash-runner")
    runner.wait_for_output("runner ready")
    client = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=30)
    job_id = client.post("/v1/jobs", json={**JOB, "width": 384, "height": 384, "steps": 30, "seed": 5}).json()["id"]

    deadline = time.monotonic() + 60
    while ((client.get(f"/v1/jobs/{job_id}").json().get("progress") or {}).get("step") or 0) < 2:
        assert time.monotonic() < deadline, "the job never made progress"
        time.sleep(0.05)
    runner.kill()
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "IN_PROGRESS"

    stack.start_runner("crash-runner")  # same id: static membership hands its partitions back
    done = client.get(f"/v1/jobs/{job_id}", params={"wait": 60}, timeout=90).json()
    assert done["state"] == "COMPLETED", done
    assert done["attempt"] == 2

    events = await job_events(kafka.bootstrap, Topics(stack.prefix).events, job_id)
    types = [e.type for e in events]
    assert sum(t.is_terminal for t in types) == 1
    assert types.count(EventType.STARTED) == 2
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))  # never reused: the second attempt numbers on past all the first could write
    second_start = types.index(EventType.STARTED, types.index(EventType.STARTED) + 1)
    assert seqs[second_start] > seqs[second_start - 1] + 1  # skipped ahead, not just the next number
    assert client.get(done["outputs"][0]["url"]).status_code == 200
