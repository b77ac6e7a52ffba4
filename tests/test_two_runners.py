"""Two runner processes in one group: they share a burst, when one dies mid-job the other finishes its job, and
one joining the group mid-job leaves the running job where it is."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from contract.events import EventType
from contract.keys import key_id
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from tests.conftest import HOME
from tests.kafka_io import job_events, produce
from tests.processes import EaselProcess, Stack, make_stack

RUNNERS = ("runner-a", "runner-b")
PARTITIONS = [0, 1, 2, 3]  # the default EASEL_REQUEST_PARTITIONS
JOBS_PER_PARTITION = 3


@pytest.fixture
def api_stack(kafka: LocalKafka, tiny_model: str, tmp_path: Path) -> Iterator[Stack]:
    stack = make_stack(kafka.bootstrap, tmp_path, f"two-runners-{uuid.uuid4().hex[:6]}", HOME)
    try:  # stopped even when starting fails, so no process outlives the test
        stack.start_api()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def two_runners(api_stack: Stack) -> tuple[Stack, dict[str, EaselProcess]]:
    runners = {runner_id: api_stack.start_runner(runner_id) for runner_id in RUNNERS}
    for runner in runners.values():
        runner.wait_for_output("runner ready")
    wait_until_shared(runners)
    return api_stack, runners


def last_assignment(runner: EaselProcess) -> set[int] | None:
    lines = [line for line in runner.output().splitlines() if '"partitions assigned"' in line]
    return set(json.loads(lines[-1])["partitions"]) if lines else None


def wait_until_shared(runners: dict[str, EaselProcess]) -> None:
    """Until the group has settled with every runner holding some of the partitions, and all of them held."""
    for _ in range(600):
        held = [last_assignment(runner) for runner in runners.values()]
        if all(held) and set().union(*(h for h in held if h)) == set(PARTITIONS) and sum(map(len, held)) == 4:
            return
        time.sleep(0.1)
    raise AssertionError(f"the runners never shared the partitions: {held}")


def ids_on_each_partition(prefix: str, count: int) -> list[str]:
    """Job ids whose keys the producer's default partitioner spreads `count` to each partition."""
    partitioner = DefaultPartitioner()
    by_partition: dict[int, list[str]] = {p: [] for p in PARTITIONS}
    for i in range(10_000):
        job_id = f"{prefix}-{i}"
        chosen = by_partition[partitioner(job_id.encode(), PARTITIONS, PARTITIONS)]
        if len(chosen) < count:
            chosen.append(job_id)
        if all(len(ids) == count for ids in by_partition.values()):
            break
    return [job_id for ids in by_partition.values() for job_id in ids]


def wait_for_step(client: httpx.Client, job_id: str, step: int) -> dict[str, Any]:
    """The job's status once it reached `step`."""
    for _ in range(1200):
        status: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if (status.get("progress") or {}).get("step", 0) >= step:
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached step {step}: {status}")


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job's status once it ended (a job written straight to Kafka is unknown to the API until it starts)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}", params={"wait": 30})
        body: dict[str, Any] = response.json()
        if body.get("finished_at") is not None:
            return body
        if response.status_code == 404:
            time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished: {body}")


@pytest.mark.slow
async def test_two_runners_share_a_burst_and_one_finishes_the_job_of_the_other_killed_mid_job(
    two_runners: tuple[Stack, dict[str, EaselProcess]],
) -> None:
    stack, runners = two_runners
    bootstrap, topics = stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix)
    owner = key_id(stack.key)
    client = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=60)

    # A burst over every partition: both runners take part, and each status names the runner that ran it.
    burst = ids_on_each_partition("burst", JOBS_PER_PARTITION)
    for job_id in burst:
        job = {"id": job_id, "owner": owner, "prompt": "x", "width": 64, "height": 64, "steps": 2, "seed": 1}
        await produce(bootstrap, topics.requests, job, key=job_id.encode())
    done = [finished(client, job_id) for job_id in burst]
    assert {body["state"] for body in done} == {"COMPLETED"}, done
    assert {body["runner_id"] for body in done} == set(RUNNERS)
    runpod = client.get(f"/v2/ep/status/{burst[0]}").json()
    assert runpod["workerId"] == done[0]["runner_id"], runpod

    # A long job; SIGKILL its runner mid-job: the other takes the partition over and runs it again.
    long_job = client.post("/v1/jobs", json={"prompt": "x", "width": 128, "height": 128, "steps": 60}).json()["id"]
    killed = wait_for_step(client, long_job, 1)["runner_id"]
    runners[killed].kill()
    [survivor] = set(RUNNERS) - {killed}

    done_long = finished(client, long_job)
    assert (done_long["state"], done_long["attempt"], done_long["runner_id"]) == ("COMPLETED", 2, survivor), done_long
    events = await job_events(bootstrap, topics.events, long_job)
    assert [e.type for e in events if e.type.is_terminal] == [EventType.COMPLETED]
    assert [e.data["runner_id"] for e in events if e.type is EventType.STARTED] == [killed, survivor]
    assert client.get(f"/v2/ep/status/{long_job}").json()["workerId"] == survivor


@pytest.mark.slow
async def test_a_runner_joining_mid_job_takes_idle_partitions_and_leaves_the_running_job_alone(
    api_stack: Stack,
) -> None:
    stack = api_stack
    first = stack.start_runner("runner-a")
    first.wait_for_output("runner ready")
    client = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=60)
    # Far longer than the second runner takes to start: the job is surely running when it joins.
    job = {"prompt": "x", "width": 384, "height": 384, "steps": 150}
    job_id = client.post("/v1/jobs", json=job).json()["id"]
    wait_for_step(client, job_id, 1)
    partition = DefaultPartitioner()(job_id.encode(), PARTITIONS, PARTITIONS)

    second = stack.start_runner("runner-b")
    wait_until_shared({"runner-a": first, "runner-b": second})
    assert partition in (last_assignment(first) or set()), first.output()[-3000:]
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202  # end it now rather than in a minute
    done = finished(client, job_id)
    assert (done["state"], done["attempt"], done["runner_id"]) == ("CANCELLED", 1, "runner-a"), done

    events = await job_events(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).events, job_id)
    assert [e.type for e in events].count(EventType.STARTED) == 1  # the second runner never ran it
    assert [e.type for e in events if e.type.is_terminal] == [EventType.CANCELLED]
    assert "stopping it here" not in first.output()
