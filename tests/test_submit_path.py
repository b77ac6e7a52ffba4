"""The submit path made cheaper: the queue limit without a Kafka round trip, partitions hashed once, one validation."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from easel.local_kafka import LocalKafka
from producers.jobs import UnseenSubmits
from producers.publish import key_hash, partition_of
from tests.processes import HOME, Stack, make_stack

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
    post = {"url": f"{limited_stack.base_url}/v1/jobs", "headers": headers}
    assert httpx.post(**post, json={**JOB, "steps": 0}).json()["error"]["field"] == "steps"  # type: ignore[arg-type]
    shorthand = httpx.post(**post, json={**JOB, "webhook": "not a url"})  # type: ignore[arg-type]
    assert shorthand.status_code == 422 and shorthand.json()["error"]["field"] == "webhook.url"
    nested = httpx.post(**post, json={**JOB, "webhook": {"url": "https://example.com/x", "extra": 1}})  # type: ignore[arg-type]
    assert nested.status_code == 422 and nested.json()["error"]["field"] == "webhook.extra"


def test_metrics_name_the_route_the_router_chose(limited_stack: Stack) -> None:
    base = limited_stack.base_url
    httpx.get(f"{base}/v1/jobs/0123", headers={"Authorization": f"Bearer {limited_stack.key}"})
    httpx.get(f"{base}/no/such/path")
    metrics = httpx.get(f"{base}/metrics").text
    assert 'easel_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}' in metrics
    assert 'easel_http_requests_total{method="GET",route="unmatched",status="404"}' in metrics
    assert 'easel_http_requests_total{method="POST",route="/v1/jobs",status="202"}' in metrics
