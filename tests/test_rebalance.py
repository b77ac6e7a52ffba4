"""A runner joining the group while a job runs must not run that job a second time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from contract.events import EventType
from contract.keys import key_id
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from tests.conftest import HOME
from tests.kafka_io import job_events, produce
from tests.processes import Stack, make_stack

PARTITIONS = [0, 1, 2, 3]
# With two members, round-robin assignment gives the second runner partitions 1 and 3.
MOVING_PARTITION = 3


@pytest.fixture
def stack_with_one_runner(kafka: LocalKafka, tiny_model: str, tmp_path: Path) -> Iterator[Stack]:
    stack = make_stack(kafka.bootstrap, tmp_path, "rebalance", HOME)
    try:  # stopped even when starting fails, so no process outlives the test
        stack.start_api()
        stack.start_runner("runner-0").wait_for_output("runner ready")
        yield stack
    finally:
        stack.stop()


@pytest.mark.slow
async def test_a_joining_runner_waits_for_the_running_job(stack_with_one_runner: Stack) -> None:
    stack = stack_with_one_runner
    partitioner = DefaultPartitioner()
    job_id = next(
        f"moving-{i}"
        for i in range(10_000)
        if partitioner(f"moving-{i}".encode(), PARTITIONS, PARTITIONS) == MOVING_PARTITION
    )
    # Far longer than the second runner takes to start: the job is surely running when it joins.
    job = {"id": job_id, "owner": key_id(stack.key), "prompt": "x", "width": 384, "height": 384, "steps": 150}
    await produce(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).requests, job, key=job_id.encode())
    client = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=120)
    first_runner = stack.processes[-1]
    deadline = time.monotonic() + 60
    while (client.get(f"/v1/jobs/{job_id}").json().get("progress") or {}).get("step", 0) < 1:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)

    stack.start_runner("runner-1")
    # The rebalance reached the first runner mid-job, and it is keeping the partition until the job ends.
    first_runner.wait_for_output("finishing the running job before giving its partition up", timeout_s=120)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202  # end it now rather than in a minute
    done = client.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
    assert done["state"] == "CANCELLED", done
    assert done["attempt"] == 1

    events = await job_events(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).events, job_id)
    assert [e.type for e in events].count(EventType.STARTED) == 1  # the second runner never ran it
    # The second runner may read the request again before the first one's commit is visible to it: it then
    # publishes the terminal event again, with the same seq (readers dedupe by seq).
    assert len({e.seq for e in events if e.type.is_terminal}) == 1
    seqs = sorted({e.seq for e in events})
    assert seqs == list(range(1, len(seqs) + 1))  # direct job: no `queued`, seq from 1
