"""The submit path made cheaper: the queue limit without a Kafka round trip, partitions hashed once, one validation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from easel.local_kafka import LocalKafka
from producers.jobs import UnseenSubmits
from producers.publish import key_hash, partition_of
from tests.processes import HOME, REPO, Stack, child_processes, make_stack

JOB = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2}
LIMIT = 5


def test_a_key_hashed_once_lands_where_the_default_partitioner_puts_it() -> None:
    for _ in range(200):
        job_key = os.urandom(16).hex().encode()
        for count in (1, 2, 3, 8, 12):
            partitions = list(range(count))
            assert partition_of(key_hash(job_key), set(partitions)) == DefaultPartitioner()(job_key, partitions, [])


def test_unseen_submits_count_until_the_view_has_them_or_they_expire() -> None:
    unseen = UnseenSubmits(view_lag_s=0.2)
    unseen.add("a", "j1")
    unseen.add("a", "j2")
    unseen.add("b", "j3")
    assert unseen.count("a", lambda job_id: False) == 2
    assert unseen.count("a", lambda job_id: job_id == "j1") == 1  # the view has j1: it counts there now
    assert unseen.count("a", lambda job_id: False) == 1
    unseen.settled("b", "j3", time.time())  # acknowledged; kept while a view may still lag
    assert unseen.count("b", lambda job_id: False) == 1
    time.sleep(0.3)
    unseen.settled("a", "j2", time.time())  # any settle drops what expired meanwhile, for every owner
    assert unseen.count("b", lambda job_id: False) == 0
    assert unseen.count("a", lambda job_id: False) == 1  # settled just now: still counted
    unseen.discard("a", "j2")
    assert unseen.count("a", lambda job_id: False) == 0


@pytest.fixture(scope="module")
def limited_stack(kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An API with no runner (jobs stay queued) and a queue limit of LIMIT per key."""
    stack = make_stack(kafka.bootstrap, tmp_path_factory.mktemp("submit-path"), "submit-path", HOME)
    stack.env |= {"EASEL_MAX_QUEUED_PER_KEY": str(LIMIT)}
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


async def test_submits_at_the_same_instant_on_one_instance_never_pass_the_limit(limited_stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {limited_stack.key}"}
    async with httpx.AsyncClient(base_url=limited_stack.base_url, headers=headers, timeout=30) as client:
        answers = await asyncio.gather(*(client.post("/v1/jobs", json=JOB) for _ in range(4 * LIMIT)))
        assert sorted(answer.status_code for answer in answers) == [202] * LIMIT + [429] * (3 * LIMIT)
        # Later, read back by the view, the same jobs still fill the key's queue.
        assert (await client.post("/v1/jobs", json=JOB)).status_code == 429
        accepted = [answer.json()["id"] for answer in answers if answer.status_code == 202]
        for job_id in accepted:
            assert (await client.get(f"/v1/jobs/{job_id}")).json()["state"] == "IN_QUEUE"


def test_a_client_cannot_set_what_the_api_sets(limited_stack: Stack) -> None:
    headers = {"Authorization": f"Bearer other-key-{limited_stack.prefix}"}
    for field in ("id", "owner", "created_at", "dialect", "client_input", "nonsense"):  # as for any unknown field
        answer = httpx.post(f"{limited_stack.base_url}/v1/jobs", json={**JOB, field: "x"}, headers=headers)
        assert answer.status_code == 422
        assert answer.json()["error"]["field"] == field
        assert answer.json()["error"]["message"] == f"{field}: is not a known field"


def test_invalid_fields_are_named_as_the_client_named_them(limited_stack: Stack) -> None:
    headers = {"Authorization": f"Bearer other-key-{limited_stack.prefix}"}

    def refused_field(body: dict[str, object]) -> str:
        answer = httpx.post(f"{limited_stack.base_url}/v1/jobs", json=body, headers=headers)
        assert answer.status_code == 422
        return str(answer.json()["error"]["field"])

    assert refused_field({**JOB, "steps": 0}) == "steps"
    assert refused_field({**JOB, "webhook": "not a url"}) == "webhook.url"  # the shorthand
    assert refused_field({**JOB, "webhook": {"url": "https://example.com/x", "extra": 1}}) == "webhook.extra"


def test_metrics_name_the_route_the_router_chose(limited_stack: Stack) -> None:
    base = limited_stack.base_url
    httpx.get(f"{base}/v1/jobs/0123", headers={"Authorization": f"Bearer {limited_stack.key}"})
    httpx.get(f"{base}/no/such/path")
    metrics = httpx.get(f"{base}/metrics").text
    assert 'easel_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}' in metrics
    assert 'easel_http_requests_total{method="GET",route="unmatched",status="404"}' in metrics
    assert 'easel_http_requests_total{method="POST",route="/v1/jobs",status="202"}' in metrics


def test_an_api_with_two_workers_serves_one_port_from_two_instances(
    kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stack = make_stack(kafka.bootstrap, tmp_path_factory.mktemp("workers"), "workers", HOME)
    log = stack.workdir / "api.log"
    with log.open("ab") as output:
        api = subprocess.Popen(
            [sys.executable, "-m", "easel.cli", "api", "--workers", "2"],
            env=stack.env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
        )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while len(child_processes(api.pid)) < 2 or not _healthy(stack.base_url):
            assert api.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        workers |= set(child_processes(api.pid))
        headers = {"Authorization": f"Bearer {stack.key}"}
        ids = [httpx.post(f"{stack.base_url}/v1/jobs", json=JOB, headers=headers).json()["id"] for _ in range(8)]
        # Any worker answers for a job another took (each reads the state topic).
        for job_id in ids:
            answer = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=headers, params={"wait": 0})
            assert answer.status_code == 200 and answer.json()["state"] == "IN_QUEUE"
    finally:
        api.send_signal(signal.SIGINT)
        api.wait(30)
    deadline = time.monotonic() + 15  # multiprocessing's resource tracker leaves a moment after its parent
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not any(_running(pid) for pid in workers)


def _running(pid: int) -> bool:
    """Alive and not a zombie (one whose parent exited waits for init, which may never reap it here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
