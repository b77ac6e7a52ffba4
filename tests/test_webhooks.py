"""Webhooks end to end: HTTP (or Kafka) → runner → events → dispatcher process → a real local receiver.

The stack's retry schedule is compressed to 0, 0.2 s, 0.5 s, 3 s (four attempts); signatures are
checked with the `standardwebhooks` library, never with our own code.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from contract.deliveries import Delivery
from contract.keys import key_id
from contract.serialization import decode
from contract.topics import Topics
from tests.kafka_io import produce, read_topic
from tests.processes import REPO, WEBHOOK_SECRET, EaselProcess, Stack, free_port
from tests.webhook_receiver import Answer, Receiver

JOB = {"prompt": "a webhook test", "width": 64, "height": 64, "steps": 2, "seed": 5}
VERIFIER = Webhook(WEBHOOK_SECRET)


class Dispatcher:
    """The stack's dispatcher process, which a test may kill and start again."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.process = self.start()

    def start(self) -> EaselProcess:
        process = self.stack.start_dispatcher("webhooks-0")
        process.wait_for_output("webhook dispatcher ready")
        return process

    def restart_after_kill(self) -> None:
        self.process.kill()
        self.process = self.start()


@pytest.fixture(scope="module")
def dispatcher(stack: Stack) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(stack)
    yield dispatcher
    dispatcher.process.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {stack.key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as client:
        yield client


async def submit(api: httpx.AsyncClient, url: str, **webhook: Any) -> str:
    response = await api.post("/v1/jobs", json={**JOB, "webhook": {"url": url, **webhook}})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def webhook_state(api: httpx.AsyncClient, job_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The job's `webhook` block once `done(block)` holds (polled, for a minute at most)."""
    async with asyncio.timeout(60):
        while True:
            block = (await api.get(f"/v1/jobs/{job_id}")).json().get("webhook")
            if block is not None and done(block):
                return dict(block)
            await asyncio.sleep(0.1)


def path() -> str:
    return f"hook/{uuid.uuid4().hex[:10]}"


async def test_a_completed_job_is_delivered_once_signed_and_echoing_its_track_id(
    dispatcher: Dispatcher, receiver: Receiver, api: httpx.AsyncClient
) -> None:
    where = path()
    job_id = await submit(api, receiver.url(where), track_id="order-42")

    [got] = await receiver.wait_for(where, 1)
    payload = VERIFIER.verify(got.body, got.headers)
    assert payload["type"] == "job.completed"
    assert payload["track_id"] == "order-42"
    assert payload["data"]["id"] == job_id and payload["data"]["state"] == "COMPLETED"
    assert payload["data"]["outputs"][0]["url"].endswith(f"/v1/jobs/{job_id}/images/0")
    assert got.webhook_id.startswith("evt_") and "." not in got.webhook_id
    with pytest.raises(WebhookVerificationError):
        VERIFIER.verify(got.body.replace(b"order-42", b"order-43"), got.headers)

    block = await webhook_state(api, job_id, lambda b: b["state"] == "delivered")
    assert block["attempts"] == 1 and block["deliveries"][0]["status_code"] == 200
    assert (await api.get(f"/v1/jobs/{job_id}")).json()["track_id"] == "order-42"
    assert len(receiver.received(where)) == 1


async def test_a_500_is_retried_with_the_same_webhook_id(
    dispatcher: Dispatcher, receiver: Receiver, api: httpx.AsyncClient
) -> None:
    where = path()
    receiver.script(where, Answer(500), Answer(200))
    job_id = await submit(api, receiver.url(where))

    first, second = await receiver.wait_for(where, 2)
    assert first.webhook_id == second.webhook_id
    assert VERIFIER.verify(first.body, first.headers) == VERIFIER.verify(second.body, second.headers)
    block = await webhook_state(api, job_id, lambda b: b["state"] == "delivered")
    assert block["attempts"] == 2


async def test_a_receiver_that_is_down_gets_the_delivery_once_it_is_up(
    dispatcher: Dispatcher, api: httpx.AsyncClient
) -> None:
    later = Receiver(port=free_port())  # nothing listens there yet
    job_id = await submit(api, later.url("hook"))
    block = await webhook_state(api, job_id, lambda b: b["state"] == "pending")
    assert block["deliveries"][0]["error"].startswith("connect")

    await later.start()
    try:
        [got] = await later.wait_for("hook", 1)
        VERIFIER.verify(got.body, got.headers)
        await webhook_state(api, job_id, lambda b: b["state"] == "delivered")
    finally:
        await later.stop()


async def test_retries_pending_when_the_dispatcher_is_killed_are_delivered_after_restart(
    dispatcher: Dispatcher, receiver: Receiver, api: httpx.AsyncClient
) -> None:
    where = path()
    # Retry-After holds each next attempt 3 s away, long enough to kill the dispatcher in between.
    receiver.script(where, Answer(503, {"Retry-After": "3"}))
    job_id = await submit(api, receiver.url(where), track_id="kill-me")
    await webhook_state(api, job_id, lambda b: b["state"] == "pending" and b["attempts"] >= 1)

    dispatcher.restart_after_kill()
    receiver.script(where, Answer(200))

    await webhook_state(api, job_id, lambda b: b["state"] == "delivered")
    got = receiver.received(where)
    assert len(got) >= 2 and {r.webhook_id for r in got} == {got[0].webhook_id}  # at least once, one id
    assert VERIFIER.verify(got[-1].body, got[-1].headers)["track_id"] == "kill-me"


async def test_410_gone_stops_deliveries_to_that_url(
    dispatcher: Dispatcher, receiver: Receiver, api: httpx.AsyncClient
) -> None:
    where = path()
    receiver.script(where, Answer(410))
    first = await submit(api, receiver.url(where))
    block = await webhook_state(api, first, lambda b: b["state"] == "failed")
    assert block["attempts"] == 1 and block["deliveries"][0]["status_code"] == 410

    second = await submit(api, receiver.url(where))
    block = await webhook_state(api, second, lambda b: b["state"] == "failed")
    assert block["attempts"] == 0 and "endpoint disabled" in block["deliveries"][0]["error"]
    assert len(receiver.received(where)) == 1


async def test_a_delivery_that_used_up_its_attempts_is_dead_lettered_and_replayed(
    dispatcher: Dispatcher, receiver: Receiver, api: httpx.AsyncClient, stack: Stack
) -> None:
    where = path()
    receiver.script(where, Answer(500))
    job_id = await submit(api, receiver.url(where), track_id="replay-me")
    block = await webhook_state(api, job_id, lambda b: b["state"] == "failed")
    assert block["attempts"] == 4 and len(receiver.received(where)) == 4

    topic = Topics(stack.prefix).webhook_dead_letters
    bootstrap = stack.env["EASEL_KAFKA_BOOTSTRAP"]
    dead = await read_topic(bootstrap, topic, lambda rs: any(r.key == job_id.encode() for r in rs))
    [letter] = [decode(Delivery, r.value) for r in dead if r.key == job_id.encode()]
    assert letter.attempt == 4 and letter.error == "HTTP 500" and letter.track_id == "replay-me"

    receiver.script(where, Answer(200))
    assert "1 deliveries replayed" in replay(stack, "--job", job_id)
    got = await receiver.wait_for(where, 5)
    assert {r.webhook_id for r in got} == {letter.id}
    await webhook_state(api, job_id, lambda b: b["state"] == "delivered" and b["attempts"] == 1)
    assert "0 deliveries replayed" in replay(stack, "--job", job_id)  # delivered now: nothing to re-send


def replay(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "easel.cli", "webhooks", "replay", *args],
        cwd=REPO, env=stack.env, capture_output=True, text=True, timeout=60, check=True,
    )
    return done.stdout


async def test_only_the_events_a_job_asked_for_are_delivered(
    dispatcher: Dispatcher, receiver: Receiver, api: httpx.AsyncClient
) -> None:
    where = path()
    job_id = await submit(api, receiver.url(where), events=["started", "progress", "completed"])
    await webhook_state(
        api, job_id, lambda b: any(d["event"] == "completed" and d["state"] == "delivered" for d in b["deliveries"])
    )
    got = receiver.received(where)
    types = [VERIFIER.verify(r.body, r.headers)["type"] for r in got]
    assert types[0] == "job.started" and "job.completed" in types
    assert 1 <= types.count("job.progress") <= 2  # two steps, throttled to one per 0.5 s
    assert len({r.webhook_id for r in got}) == len(got)  # one id per event


async def test_a_kafka_direct_modelslab_job_gets_a_modelslab_body(
    dispatcher: Dispatcher, receiver: Receiver, stack: Stack
) -> None:
    bootstrap = stack.env["EASEL_KAFKA_BOOTSTRAP"]
    jobs = {}
    for name, model in (("ok", "default"), ("bad", "no-such-model")):
        job_id = f"direct-hook-{uuid.uuid4().hex[:8]}"
        jobs[name] = job_id
        job = {"id": job_id, "owner": key_id(stack.key), **JOB, "model": model, "dialect": "modelslab",
               "webhook": {"url": receiver.url(name), "track_id": f"ml-{name}"}}
        await produce(bootstrap, Topics(stack.prefix).requests, job, key=job_id.encode())

    [ok] = await receiver.wait_for("ok", 1)
    body = VERIFIER.verify(ok.body, ok.headers)
    assert body["status"] == "success" and body["id"] == jobs["ok"] and body["track_id"] == "ml-ok"
    assert len(body["output"]) == 1 and body["output"][0].startswith("http")
    assert isinstance(body["generationTime"], float) and body["meta"]["seed"] == 5

    [bad] = await receiver.wait_for("bad", 1)
    body = VERIFIER.verify(bad.body, bad.headers)
    assert body["status"] == "failed" and body["track_id"] == "ml-bad" and "unknown model" in body["message"]


@pytest.mark.parametrize(
    ("webhook", "field", "rule"),
    [
        ({"url": "http://169.254.169.254/latest/meta-data"}, "webhook.url", "link-local"),
        ({"url": "http://10.0.0.7/hook"}, "webhook.url", "private"),
        ({"url": "http://100.64.0.1/hook"}, "webhook.url", "carrier-grade NAT"),
        ({"url": "http://[::1]:9000/hook"}, "webhook.url", "loopback"),
        ({"url": "http://[::ffff:127.0.0.1]/hook"}, "webhook.url", "IPv4-mapped"),
        ({"url": "http://224.0.0.1/hook"}, "webhook.url", "multicast"),
        ({"url": "http://0.0.0.0/hook"}, "webhook.url", "unspecified"),
        ({"url": "ftp://example.com/hook"}, "webhook.url", "URL scheme should be 'http' or 'https'"),
        ("http://192.168.0.10/hook", "webhook", "private"),
    ],
)
async def test_a_webhook_to_a_blocked_address_is_refused_at_submit(
    api: httpx.AsyncClient, webhook: object, field: str, rule: str
) -> None:
    response = await api.post("/v1/jobs", json={**JOB, "webhook": webhook})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and rule in error["message"], error
    assert "Traceback" not in response.text
