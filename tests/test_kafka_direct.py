"""Any Kafka producer can submit jobs; anything it writes that is not a job is dead-lettered."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
import orjson

from contract.events import EventType
from contract.keys import key_id
from contract.topics import Topics
from tests.kafka_io import job_events, produce, read_topic
from tests.processes import REPO, Stack


def direct_job(stack: Stack, **changes: object) -> dict[str, object]:
    """What the README tells a foreign producer to write: JSON per `easel schema`."""
    return {
        "id": f"direct-{uuid.uuid4().hex[:12]}",
        "owner": key_id(stack.key),
        "prompt": "written straight to Kafka",
        "width": 64,
        "height": 64,
        "steps": 2,
        "seed": 3,
        **changes,
    }


async def test_a_job_written_to_the_requests_topic_completes(stack: Stack, client: httpx.Client) -> None:
    job = direct_job(stack)
    bootstrap = stack.env["EASEL_KAFKA_BOOTSTRAP"]
    await produce(bootstrap, Topics(stack.prefix).requests, job, key=str(job["id"]).encode())

    events = await job_events(bootstrap, Topics(stack.prefix).events, str(job["id"]))
    assert events[0].type is EventType.STARTED
    assert events[-1].type is EventType.COMPLETED
    status = client.get(f"/v1/jobs/{job['id']}").json()
    assert status["state"] == "COMPLETED"
    assert client.get(status["outputs"][0]["url"]).status_code == 200


async def test_poison_messages_are_dead_lettered_and_the_runner_carries_on(
    stack: Stack, client: httpx.Client
) -> None:
    topics = Topics(stack.prefix)
    bootstrap = stack.env["EASEL_KAFKA_BOOTSTRAP"]
    invalid = direct_job(stack, width=100)  # has an id: that job must end FAILED, naming the rule
    marker = uuid.uuid4().hex.encode()
    await produce(bootstrap, topics.requests, b"\x00 not json " + marker, key=marker)
    await produce(bootstrap, topics.requests, invalid, key=str(invalid["id"]).encode())
    healthy = direct_job(stack)
    await produce(bootstrap, topics.requests, healthy, key=str(healthy["id"]).encode())

    dead = await read_topic(
        bootstrap, topics.dead_letters, lambda rs: {marker, str(invalid["id"]).encode()} <= {r.key for r in rs}
    )
    reasons = {r.key: dict(r.headers)["easel-reason"].decode() for r in dead}
    assert reasons[marker] == "invalid job: not a JSON object"
    assert "width: Value error, must be a multiple of 8" in reasons[str(invalid["id"]).encode()]
    assert all(dict(r.headers)["easel-source"].startswith(topics.requests.encode()) for r in dead)

    failed = await job_events(bootstrap, topics.events, str(invalid["id"]))
    assert [e.type for e in failed] == [EventType.FAILED]
    assert "multiple of 8" in failed[0].data["error"]
    status = client.get(f"/v1/jobs/{invalid['id']}").json()
    assert status["state"] == "FAILED"

    after = await job_events(bootstrap, topics.events, str(healthy["id"]))
    assert after[-1].type is EventType.COMPLETED


async def test_a_job_older_than_its_ttl_times_out_without_running(stack: Stack, client: httpx.Client) -> None:
    job = direct_job(stack, created_at=time.time() - 60, ttl_s=5)
    bootstrap = stack.env["EASEL_KAFKA_BOOTSTRAP"]
    await produce(bootstrap, Topics(stack.prefix).requests, job, key=str(job["id"]).encode())
    events = await job_events(bootstrap, Topics(stack.prefix).events, str(job["id"]))
    assert [e.type for e in events] == [EventType.TIMED_OUT]
    assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "TIMED_OUT"


async def test_the_schema_command_prints_the_request_schema(stack: Stack) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "easel.cli", "schema"], cwd=REPO, capture_output=True, check=True, env=stack.env
    ).stdout
    schema = orjson.loads(printed)
    assert set(schema["required"]) == {"id", "owner", "prompt"}
    assert schema["properties"]["width"]["maximum"] == 2048
