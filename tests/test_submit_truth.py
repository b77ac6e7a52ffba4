"""Submit truth: a submit Kafka does not confirm in time either runs later as a normal job or ends FAILED.

The broker is this module's own (the session's is shared), paused with SIGSTOP around a submit so that the
API's short EASEL_SUBMIT_TIMEOUT_S runs out while its records wait in the producer.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from contract.errors import INTERNAL_MESSAGE, UNAVAILABLE_MESSAGE, SubmitRefused, SubmitUnconfirmed
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from producers.jobs import NOT_CONFIRMED
from service.errors import error_response
from tests.conftest import HOME
from tests.kafka_io import job_events, read_topic
from tests.processes import Stack, make_stack, own_broker

JOB = {"prompt": "a submit in doubt", "width": 64, "height": 64, "steps": 2}
PAUSE_S = 3.0  # under the producer's request timeout (submit timeout + 5 s): the connection survives it


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalKafka]:
    with own_broker() as broker:
        yield broker


@contextmanager
def paused(broker: LocalKafka) -> Iterator[None]:
    """The broker stopped (SIGSTOP) inside the block and for PAUSE_S in all, then continued."""
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    resume_at = time.monotonic() + PAUSE_S
    try:
        yield
        time.sleep(max(0.0, resume_at - time.monotonic()))
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)


def start_stack(broker: LocalKafka, workdir: Path, prefix: str, **env: str) -> Stack:
    stack = make_stack(broker.bootstrap, workdir / prefix, prefix, HOME)
    # No queue limit: counting the key's queued jobs reads Kafka first, which would answer 503 before the submit.
    stack.env.update(EASEL_SUBMIT_TIMEOUT_S="0.5", EASEL_MAX_QUEUED_PER_KEY="0", **env)
    return stack


def unconfirmed_submit(stack: Stack, broker: LocalKafka) -> str:
    """Submit while the broker is paused: the 503 names the job; its id."""
    headers = {"Authorization": f"Bearer {stack.key}"}
    with paused(broker):
        answer = httpx.post(f"{stack.base_url}/v1/jobs", json=JOB, headers=headers, timeout=30)
    assert answer.status_code == 503, answer.text
    job_id = answer.headers["x-job-id"]
    message = answer.json()["error"]["message"]
    assert job_id in message
    assert f"GET /v1/jobs/{job_id}" in message
    assert "either runs" in message and "ends FAILED" in message
    return job_id


def final_status(stack: Stack, job_id: str) -> dict[str, Any]:
    """The job's status once it is terminal (unknown for a moment: its status may still be on its way)."""
    headers = {"Authorization": f"Bearer {stack.key}"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", params={"wait": 10}, headers=headers, timeout=30)
        if answer.status_code == 200 and answer.json()["state"] not in ("IN_QUEUE", "IN_PROGRESS"):
            status: dict[str, Any] = answer.json()
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never ended: {answer.status_code} {answer.text}")


async def test_an_unconfirmed_submit_ends_failed_when_its_request_was_never_sent(
    broker: LocalKafka, tmp_path: Path
) -> None:
    # Settling gives up long before the broker is back: the request is never handed to Kafka.
    stack = start_stack(broker, tmp_path, "unsettled", EASEL_SUBMIT_SETTLE_S="1")
    try:
        stack.start_api()
        job_id = unconfirmed_submit(stack, broker)
        done = final_status(stack, job_id)
        assert done["state"] == "FAILED", done
        assert done["error"] == NOT_CONFIRMED
        events = await job_events(broker.bootstrap, Topics(stack.prefix).events, job_id)
        assert [e.type.value for e in events] == ["queued", "failed"]
        requests = await read_topic(broker.bootstrap, Topics(stack.prefix).requests, lambda rs: True, linger_s=1.0)
        assert all(r.key != job_id.encode() for r in requests)  # never sent: no runner can start it later
    finally:
        stack.stop()


async def test_an_unconfirmed_submit_runs_normally_once_kafka_takes_it(
    broker: LocalKafka, tmp_path: Path, tiny_model: str
) -> None:
    stack = start_stack(broker, tmp_path, "settled")  # settling outlasts the pause
    try:
        stack.start_api()
        stack.start_runner().wait_for_output("runner ready")
        job_id = unconfirmed_submit(stack, broker)
        done = final_status(stack, job_id)
        assert done["state"] == "COMPLETED", done
        events = await job_events(broker.bootstrap, Topics(stack.prefix).events, job_id)
        assert sum(e.type.is_terminal for e in events) == 1
    finally:
        stack.stop()


DIALECT_SUBMITS = {  # a submit path of each dialect, and where its clients are told to follow the job
    "/v1/jobs": "GET /v1/jobs/j1",
    "/v2/ep/run": "GET /v2/ep/status/j1",
    "/api/v6/realtime/text2img": "POST /api/v6/realtime/fetch/j1",
    "/sdapi/v1/txt2img": "GET /v1/jobs/j1",
    "/api/txt2img/async": "GET /api/txt2img/status?job_id=j1",
}


@pytest.mark.parametrize(("path", "route"), DIALECT_SUBMITS.items())
def test_each_dialect_says_what_became_of_a_submit_kafka_failed(path: str, route: str) -> None:
    unconfirmed = error_response(path, SubmitUnconfirmed("j1"))
    body = bytes(unconfirmed.body).decode()
    assert unconfirmed.status_code == 503
    assert unconfirmed.headers["x-job-id"] == "j1"
    assert route in body and NOT_CONFIRMED in body and UNAVAILABLE_MESSAGE not in body

    refused = error_response(path, SubmitRefused("j1"))
    body = bytes(refused.body).decode()
    assert refused.status_code == 500
    assert refused.headers["x-job-id"] == "j1" and "retry-after" not in refused.headers
    assert "will not help" in body and route in body and INTERNAL_MESSAGE not in body
