"""The webhook dispatcher never wedges and never drops a webhook (issue 10, part 5).

- Bodies are bounded: an echoed input over the cap is replaced by a marker, and a Delivery record's worst case
  is proved under Kafka's limit on the contract alone.
- DNS failures are retried like connection errors; only a blocked address is an SSRF refusal.
- An error of ours while routing an event is retried on the schedule, then dead-lettered; a delivery record Kafka
  refuses for good is dead-lettered small, and the commit point moves on.

Broker tests run a real Dispatcher in this process, on its own topic prefix, against the session broker and a real
aiohttp receiver; jobs are written straight to Kafka as the API and a runner would. Faults are injected through the
dispatcher's own seams: the resolver (`AddressPolicy.lookup`) and the router. The last test runs the real
dispatcher process of the stack with a small body cap, behind the real API and runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from standardwebhooks import Webhook

from consumers.webhooks.addresses import AddressPolicy, BlockedAddress, UnresolvedHost, system_lookup
from consumers.webhooks.bodies import bounded, webhook_body
from consumers.webhooks.dispatcher import Dispatcher
from consumers.webhooks.replay import replay
from consumers.webhooks.sender import Sender
from consumers.webhooks.signing import Signer
from contract.deliveries import (
    ERROR_CHARS,
    MAX_WEBHOOK_BODY_BYTES,
    Delivery,
    DeliveryState,
    DeliveryStatus,
    delivery_id,
)
from contract.errors import SettingsError
from contract.events import Event, EventType
from contract.job import MAX_URL_LENGTH, Job
from contract.lifecycle import advance, queued_status
from contract.serialization import decode, encode, key
from contract.settings import Settings
from contract.states import JobState, JobStatus
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from producers import open_producer, publish
from tests.kafka_io import Records, read_topic
from tests.processes import WEBHOOK_SECRET, EaselProcess, Stack
from tests.webhook_receiver import Receiver

KAFKA_RECORD_LIMIT = 1 << 20  # the producer's max_request_size and the broker's default record batch limit
WIDEST = "\x01"  # orjson writes a control character as \u00XX: 6 bytes for 1
VERIFIER = Webhook(WEBHOOK_SECRET)
SCHEDULE = ("0", "0.2", "0.5", "1")  # four attempts, seconds apart
Route = Callable[[Event, int], Awaitable[Delivery | None]]


def quote_heavy_input(size: int) -> dict[str, Any]:
    """A RunPod input of about `size` bytes as sent, every byte of its pad a quote (two bytes once escaped)."""
    return {"prompt": "x", "cfg_scale": 5, "steps": 2, "width": 64, "height": 64, "pad": '"' * size}


# --- the contract: every Delivery record has a size bound ----------------------------------------------------------

def test_a_delivery_records_worst_case_fits_under_kafkas_limit() -> None:
    # The largest body the dispatcher sends, all of it escapes (orjson's JSON holds no raw control characters:
    # `"` and `\` are what grow when the body is embedded as a string), and every other field at its bound.
    body = orjson.dumps('"' * ((MAX_WEBHOOK_BODY_BYTES - 2) // 2)).decode()
    assert len(body) == MAX_WEBHOOK_BODY_BYTES and set(body[1:-1]) == {"\\", '"'}
    job_id = "j" * 64
    worst = Delivery(
        id=delivery_id(job_id, 10**9), job_id=job_id, owner=WIDEST * 64, event="timed_out", seq=10**9,
        url="https://example.com/" + WIDEST * MAX_URL_LENGTH, track_id=WIDEST * 256, body=body,
        attempt=10**6, due_at=1e10, replay=10**6, created_at=1e10,
    ).after_failure(10**6, WIDEST * 10_000)
    assert len(worst.error or "") == ERROR_CHARS  # a reason is cut to its bound
    encoded = encode(worst)
    assert len(encoded) > 2 * MAX_WEBHOOK_BODY_BYTES  # the escaping really happened
    # A kilobyte to spare for the key, the routing header and Kafka's record framing.
    assert len(encoded) + len(key(job_id)) + 1024 < KAFKA_RECORD_LIMIT
    assert len(encode(worst.without_body("Kafka refused it"))) < 32 * 1024


def test_a_body_cap_above_the_proved_bound_is_refused() -> None:
    with pytest.raises(SettingsError, match="EASEL_WEBHOOK_MAX_BODY_BYTES"):
        Dispatcher(Settings(webhook_secret=WEBHOOK_SECRET, webhook_max_body_bytes=MAX_WEBHOOK_BODY_BYTES + 1))


def failed_status(dialect: str, client_input: dict[str, Any]) -> tuple[Event, JobStatus]:
    job = Job(id="big-1", owner="o", prompt="p", width=64, height=64, steps=2, dialect=dialect)
    event = Event(job_id=job.id, seq=1, type=EventType.FAILED, ts=2.0, data={"error": "boom"})
    # Past the contract's 64 KiB echo cap (model_copy does not validate): what a Kafka-direct job or a future
    # dialect could carry; the dispatcher must not rely on the cap.
    return event, advance(queued_status(job, 1.0), event).model_copy(update={"client_input": client_input})


def test_an_800_kb_quote_heavy_runpod_input_is_replaced_by_a_marker() -> None:
    sent = quote_heavy_input(800_000)
    event, status = failed_status("runpod", sent)
    body = webhook_body("runpod", event, status, "https://example.com/h", "t-1", Settings(), 256 * 1024)

    assert body.truncated and len(body.text) <= 256 * 1024
    echoed = orjson.loads(body.text)
    assert echoed["input"] == {"truncated": True, "bytes": len(orjson.dumps(sent))}
    assert echoed["id"] == "big-1" and echoed["status"] == "FAILED" and echoed["error"] == "boom"
    assert echoed["webhook"] == "https://example.com/h" and echoed["track_id"] == "t-1"


def test_a_body_within_the_cap_is_left_whole_and_other_large_fields_are_cut_largest_first() -> None:
    small = {"id": "j", "input": {"prompt": "p"}}
    assert orjson.loads(bounded(small, 2048, ("input",)).text) == small
    body = {"type": "job.failed", "data": {"id": "j", "error": "e" * 10_000, "spec": {"prompt": "p" * 100}}}
    cut = orjson.loads(bounded(body, 2048).text)
    assert cut["data"]["error"] == {"truncated": True, "bytes": 10_002}  # only the field that had to go
    assert cut["data"]["spec"] == {"prompt": "p" * 100} and cut["type"] == "job.failed"


# --- DNS: retried, never an SSRF refusal ---------------------------------------------------------------------------

def failing_lookup(errno: int) -> Callable[[str, int], Awaitable[list[str]]]:
    async def lookup(host: str, port: int) -> list[str]:
        raise socket.gaierror(errno, "injected")
    return lookup


async def test_a_failed_lookup_is_unresolved_not_blocked_and_only_blocked_addresses_are_refused() -> None:
    for errno in (socket.EAI_AGAIN, socket.EAI_NONAME):
        policy = AddressPolicy(lookup=failing_lookup(errno))
        with pytest.raises(UnresolvedHost) as raised:
            await policy.resolve("hooks.example.com", 443)
        assert not isinstance(raised.value, BlockedAddress)
        assert raised.value.no_such_name is (errno == socket.EAI_NONAME)

    # At submit, a name that does not exist is refused (a typo the client can fix); one DNS could not answer
    # for now is let through (vetted again when the dispatcher connects).
    await AddressPolicy(lookup=failing_lookup(socket.EAI_AGAIN)).vet_url("https://hooks.example.com/h")
    with pytest.raises(BlockedAddress, match="does not resolve"):
        await AddressPolicy(lookup=failing_lookup(socket.EAI_NONAME)).vet_url("https://hooks.example.com/h")

    async def private(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    with pytest.raises(BlockedAddress, match=r"hooks\.example\.com resolves to 10\.0\.0\.7 is a private address"):
        await AddressPolicy(lookup=private).resolve("hooks.example.com", 443)


@dataclass
class Faults:
    """Faults injected through the dispatcher's seams, by host and by job id."""

    dns_failures: dict[str, int] = field(default_factory=dict)  # host → EAI_AGAIN answers left, then 127.0.0.1
    route_failures: dict[str, int] = field(default_factory=dict)  # job id → routing errors left (-1: always)
    oversized: set[str] = field(default_factory=set)  # job ids whose delivery body bypasses the cap
    lookups: list[str] = field(default_factory=list)

    async def lookup(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.dns_failures:
            return await system_lookup(host, port)
        if self.dns_failures[host] > 0:
            self.dns_failures[host] -= 1
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return ["127.0.0.1"]

    def around(self, route: Route) -> Route:
        async def faulty(event: Event, attempts_made: int = 0) -> Delivery | None:
            left = self.route_failures.get(event.job_id, 0)
            if left:
                self.route_failures[event.job_id] = left - 1 if left > 0 else left
                raise RuntimeError("injected routing bug")
            delivery = await route(event, attempts_made)
            if delivery is not None and event.job_id in self.oversized:
                # A renderer that bypassed the cap: the record is over Kafka's limit once the body is escaped.
                return delivery.model_copy(update={"body": orjson.dumps({"pad": '"' * 400_000}).decode()})
            return delivery
        return faulty


async def test_the_sender_retries_eai_again_and_posts_once_the_name_resolves() -> None:
    receiver = await Receiver().start()
    faults = Faults(dns_failures={"flaky.example.test": 1})
    policy = AddressPolicy.from_cidrs(["127.0.0.0/8"])
    sender = Sender(replace(policy, lookup=faults.lookup), Signer(WEBHOOK_SECRET, {}), 5.0, 8, 2)
    hook = Delivery(id="evt_dns", job_id="j", owner="o", event="completed", seq=1,
                    url=f"http://flaky.example.test:{receiver.port}/dns", body='{"a":1}')
    try:
        first = await sender.send(hook)
        assert not first.blocked and not first.ok and first.outcome == "dns", first
        assert "Temporary failure in name resolution" in (first.error or "")
        second = await sender.send(hook)
        assert second.ok, second
        [got] = receiver.received("dns")
        assert VERIFIER.verify(got.body, got.headers) == {"a": 1}
    finally:
        await sender.close()
        await receiver.stop()


# --- a real dispatcher against the broker -----------------------------------------------------------------------------

@dataclass
class Harness:
    settings: Settings
    faults: Faults
    receiver: Receiver

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix)

    async def finished_job(self, url: str, job_id: str | None = None, **fields: Any) -> str:
        """A job written straight to Kafka, as the API and a runner would: its request, then its final status and
        event (FAILED: no images needed)."""
        job = Job(id=job_id or new_job_id(), owner="direct-owner", prompt="p", width=64, height=64, steps=2,
                  webhook={"url": url, "track_id": "rel"}, **fields)
        event = Event(job_id=job.id, seq=1, type=EventType.FAILED, data={"error": "boom"})
        producer = await open_producer(self.settings, "test-direct-jobs")
        try:
            for topic, value in ((self.topics.requests, encode(job)),
                                 (self.topics.state, encode(advance(queued_status(job, time.time()), event))),
                                 (self.topics.events, encode(event))):
                await publish(producer, topic, value, key(job.id), what="a test record")
        finally:
            await producer.stop()
        return job.id

    async def statuses(self, job_id: str, done: Callable[[list[DeliveryStatus]], bool]) -> list[DeliveryStatus]:
        def of_job(records: Records) -> list[DeliveryStatus]:
            return [s for s in (decode(DeliveryStatus, r.value) for r in records if r.value) if s.job_id == job_id]

        topic = self.topics.webhook_status
        return of_job(await read_topic(self.settings.bootstrap, topic, lambda rs: done(of_job(rs))))

    async def records(self, topic: str, job_id: str) -> Records:
        records = await read_topic(self.settings.bootstrap, topic, lambda rs: any(r.key == key(job_id) for r in rs))
        return [r for r in records if r.key == key(job_id)]


def new_job_id() -> str:
    return f"rel-{uuid.uuid4().hex[:10]}"


def final(state: DeliveryState) -> Callable[[list[DeliveryStatus]], bool]:
    return lambda statuses: any(s.state is state for s in statuses)


@pytest.fixture(scope="module")
async def harness(kafka: LocalKafka) -> AsyncIterator[Harness]:
    settings = Settings(
        kafka_bootstrap=kafka.bootstrap, topic_prefix=f"reliability-{uuid.uuid4().hex[:6]}", submit_timeout_s=3,
        webhook_secret=WEBHOOK_SECRET, webhook_allow_networks=("127.0.0.0/8",), webhook_retry_schedule_s=SCHEDULE,
        webhook_partitions=1,
    )
    faults = Faults()
    dispatcher = Dispatcher(settings)
    dispatcher.policy = replace(dispatcher.policy, lookup=faults.lookup)  # the Sender is built from it in run()
    receiver = await Receiver().start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatcher.router, "route", faults.around(dispatcher.router.route))
        running = asyncio.create_task(dispatcher.run())
        try:
            yield Harness(settings, faults, receiver)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await receiver.stop()


async def test_eai_again_at_delivery_is_retried_on_the_schedule_then_delivered(harness: Harness) -> None:
    host = f"dns-{uuid.uuid4().hex[:8]}.example.test"
    harness.faults.dns_failures[host] = 2
    job_id = await harness.finished_job(f"http://{host}:{harness.receiver.port}/dns-{host}")

    [got] = await harness.receiver.wait_for(f"dns-{host}", 1)
    assert VERIFIER.verify(got.body, got.headers)["data"]["id"] == job_id
    statuses = await harness.statuses(job_id, final(DeliveryState.DELIVERED))
    assert [s.attempts for s in statuses if s.state is DeliveryState.PENDING] == [1, 2]
    assert all((s.error or "").startswith("dns: ") for s in statuses if s.state is DeliveryState.PENDING)
    assert statuses[-1].state is DeliveryState.DELIVERED and statuses[-1].attempts == 3
    assert harness.faults.lookups.count(host) == 3


async def test_an_error_while_routing_is_retried_as_a_failed_attempt_then_delivered(harness: Harness) -> None:
    where, job_id = f"route-{uuid.uuid4().hex[:8]}", new_job_id()
    harness.faults.route_failures[job_id] = 2
    await harness.finished_job(harness.receiver.url(where), job_id)

    [got] = await harness.receiver.wait_for(where, 1)
    assert VERIFIER.verify(got.body, got.headers)["data"]["error"] == "boom"
    [delivered] = await harness.statuses(job_id, final(DeliveryState.DELIVERED))
    assert delivered.attempts == 3  # two routing attempts failed, the third led to the one POST
    assert len(harness.receiver.received(where)) == 1


async def test_an_error_that_keeps_happening_while_routing_ends_dead_lettered(harness: Harness) -> None:
    where, job_id = f"always-{uuid.uuid4().hex[:8]}", new_job_id()
    harness.faults.route_failures[job_id] = -1
    await harness.finished_job(harness.receiver.url(where), job_id)

    [letter] = await harness.records(harness.topics.dead_letters, job_id)
    assert decode(Event, letter.value).type is EventType.FAILED
    assert dict(letter.headers)["easel-reason"] == b"webhook routing failed 4 times: internal: RuntimeError"

    later = f"later-{uuid.uuid4().hex[:8]}"
    await harness.finished_job(harness.receiver.url(later))
    await harness.receiver.wait_for(later, 1)
    assert harness.receiver.received(where) == []


async def test_a_delivery_kafka_refuses_is_dead_lettered_without_its_body_and_the_commit_moves_on(
    harness: Harness,
) -> None:
    where, job_id = f"huge-{uuid.uuid4().hex[:8]}", new_job_id()
    harness.faults.oversized.add(job_id)
    await harness.finished_job(harness.receiver.url(where), job_id)

    [letter] = await harness.records(harness.topics.webhook_dead_letters, job_id)
    assert len(letter.value) < 4096
    small = decode(Delivery, letter.value)
    assert small.id == delivery_id(job_id, 1) and small.event == "failed" and small.url.endswith(where)
    assert small.body == "" and (small.dropped_body_bytes or 0) > 800_000
    assert "Kafka refused" in (small.error or "") and "MessageSizeTooLarge" in (small.error or "")
    [failed] = await harness.statuses(job_id, final(DeliveryState.FAILED))
    assert failed.attempts == 0 and "Kafka refused" in (failed.error or "")

    later = f"after-huge-{uuid.uuid4().hex[:8]}"
    await harness.finished_job(harness.receiver.url(later))
    await harness.receiver.wait_for(later, 1)
    assert harness.receiver.received(where) == []

    [event] = await harness.records(harness.topics.events, job_id)
    assert await committed_past(harness.settings, TopicPartition(harness.topics.events, 0), event.offset)
    assert await replay(harness.settings, job_id=job_id) == []  # no body to send again


async def test_an_unreadable_delivery_record_is_dead_lettered_as_it_came(harness: Harness) -> None:
    garbage_key = f"garbage-{uuid.uuid4().hex[:8]}"
    producer = await open_producer(harness.settings, "test-garbage")
    try:
        await publish(producer, harness.topics.webhook_deliveries, b'{"not": "a delivery"}', key(garbage_key),
                      what="a test record")
    finally:
        await producer.stop()

    [letter] = await harness.records(harness.topics.dead_letters, garbage_key)
    assert letter.value == b'{"not": "a delivery"}'
    assert dict(letter.headers)["easel-reason"] == b"webhook dispatcher: ValidationError"

    later = f"after-garbage-{uuid.uuid4().hex[:8]}"
    await harness.finished_job(harness.receiver.url(later))
    await harness.receiver.wait_for(later, 1)


async def committed_past(settings: Settings, tp: TopicPartition, offset: int) -> bool:
    """Whether the dispatchers' group committed beyond `offset` (polled: commits happen every half second)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(30):
            while True:
                offsets = await admin.list_consumer_group_offsets(Topics(settings.topic_prefix).webhook_group)
                if tp in offsets and offsets[tp].offset > offset:
                    return True
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


# --- the stack's dispatcher process, behind the real API and runner ------------------------------------------------

async def test_the_dispatcher_process_truncates_a_quote_heavy_runpod_echo_and_goes_on(stack: Stack) -> None:
    cap = 16 * 1024
    env = {**stack.env, "EASEL_WEBHOOK_DISPATCHER_ID": "webhooks-0", "EASEL_WEBHOOK_MAX_BODY_BYTES": str(cap)}
    process = EaselProcess("webhooks", env, stack.workdir / "webhooks-capped.log")
    receiver = await Receiver().start()
    headers = {"Authorization": f"Bearer {stack.key}"}
    try:
        process.wait_for_output("webhook dispatcher ready")
        async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as api:
            # As large as the API echoes (64 KiB as JSON): every quote doubles once the body is a record's string.
            big = quote_heavy_input(30_000)
            first = await api.post("/v2/ep/run", json={"input": big, "webhook": receiver.url("big")})
            assert first.status_code == 200, first.text
            small = quote_heavy_input(10)
            second = await api.post("/v2/ep/run", json={"input": small, "webhook": receiver.url("small")})
            assert second.status_code == 200, second.text

        [got] = await receiver.wait_for("big", 1, timeout_s=120)
        assert len(got.body) <= cap
        body = VERIFIER.verify(got.body, got.headers)
        assert body["id"] == first.json()["id"] and body["status"] == JobState.COMPLETED.value
        assert body["input"] == {"truncated": True, "bytes": len(orjson.dumps(big))}
        assert body["webhook"] == receiver.url("big") and body["output"]["image_url"].startswith("http")
        assert "webhook body truncated" in process.output()

        [later] = await receiver.wait_for("small", 1, timeout_s=120)
        assert VERIFIER.verify(later.body, later.headers)["input"] == small  # within the cap: echoed whole
    finally:
        await receiver.stop()
        process.stop()
