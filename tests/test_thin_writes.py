"""Thin per-step writes: every progress event goes to the events topic, the full status only now and then.

And what that costs after a crash: the state topic may lag the events topic, so a redelivered job's new
attempt numbers its events past a whole attempt's worth of seqs (contract.lifecycle.resumed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from contract.events import Event, EventType
from contract.job import Job
from contract.lifecycle import events_per_attempt, queued_status, resumed
from contract.serialization import decode
from contract.settings import Settings
from contract.states import JobState, JobStatus
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from producers import EventWriter, ensure_topics, open_producer
from tests.kafka_io import Records, events_of, job_events, read_topic
from tests.processes import Stack

STEPS = 30


def statuses_of(records: Records, job_id: str) -> list[JobStatus]:
    return [decode(JobStatus, r.value) for r in records if r.key == job_id.encode() and r.value is not None]


async def events_until(bootstrap: str, topic: str, job_id: str, done: Callable[[list[Event]], bool]) -> list[Event]:
    return events_of(await read_topic(bootstrap, topic, lambda rs: done(events_of(rs, job_id))), job_id)


async def statuses_until(
    bootstrap: str, topic: str, job_id: str, done: Callable[[list[JobStatus]], bool]
) -> list[JobStatus]:
    return statuses_of(await read_topic(bootstrap, topic, lambda rs: done(statuses_of(rs, job_id))), job_id)


def progress(step: int) -> dict[str, object]:
    return {"step": step, "total": STEPS, "fraction": step / STEPS, "elapsed_s": 0.1, "eta_s": 0.1, "it_per_s": 10.0}


def queued(job_id: str, steps: int = STEPS) -> JobStatus:
    return queued_status(Job(id=job_id, owner="o", prompt="x", steps=steps), time.time())


@pytest.fixture
async def topics(kafka: LocalKafka) -> Topics:
    settings = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=f"thin-{uuid.uuid4().hex[:8]}")
    await ensure_topics(settings)
    return Topics(settings.topic_prefix)


@pytest.fixture
async def producer(kafka: LocalKafka) -> AsyncIterator[AIOKafkaProducer]:
    producer = await open_producer(Settings(kafka_bootstrap=kafka.bootstrap), "thin-writes-test")
    try:
        yield producer
    finally:
        await producer.stop()


def test_a_redelivered_running_job_numbers_on_past_a_whole_attempt() -> None:
    running = queued("j").model_copy(update={"state": JobState.IN_PROGRESS, "seq": 7, "attempt": 1})
    assert events_per_attempt(running) == 2 * (STEPS + 1) + 2  # started, progress + preview per step, outcome
    assert resumed(running).seq == 7 + events_per_attempt(running)
    unknown = running.model_copy(update={"spec": {}})  # without its parameters: as many steps as any job may have
    assert events_per_attempt(unknown) == 2 * (150 + 1) + 2
    # Not running: nothing can have been written past its status.
    fresh = queued("j")
    assert resumed(fresh) == fresh
    requeued = fresh.model_copy(update={"state": JobState.FAILED, "seq": 40})
    assert resumed(requeued) == requeued


async def test_steps_write_every_event_but_the_status_only_for_state_changes_and_the_newest(
    kafka: LocalKafka, topics: Topics, producer: AIOKafkaProducer
) -> None:
    """With an interval longer than the job: started, and no progress status once the outcome is emitted (the
    outcome's status, which the runner writes next, supersedes it)."""
    counts: dict[float, int] = {}
    for interval in (0.0, 3600.0):  # before (every step) and after
        job_id = f"steps-{interval:g}"
        writer = EventWriter(producer, topics, queued(job_id), status_interval_s=interval)
        writer.emit(EventType.STARTED, {"runner_id": "r"})
        for step in range(1, STEPS + 1):
            writer.emit(EventType.PROGRESS, progress(step))
        writer.emit(EventType.COMPLETED, {"outputs": [], "seeds": [1]})
        await writer.flush()
        await writer.close()
        events = await events_until(kafka.bootstrap, topics.events, job_id, lambda es: len(es) == STEPS + 1)
        assert [e.type for e in events] == [EventType.STARTED, *[EventType.PROGRESS] * STEPS]
        assert [e.seq for e in events] == list(range(1, STEPS + 2))
        expected = STEPS + 1 if interval == 0.0 else 1

        def read_all(records: Records, job_id: str = job_id, expected: int = expected) -> bool:
            return len(statuses_of(records, job_id)) >= expected

        # Lingering, so that a status written past the expected ones is counted too.
        statuses = statuses_of(await read_topic(kafka.bootstrap, topics.state, read_all, linger_s=0.5), job_id)
        assert statuses[0].state == JobState.IN_PROGRESS and statuses[0].seq == 1
        # The outcome's status (the runner writes that) carries the newest progress, pending or not.
        assert writer.outcome is not None and writer.outcome[1].seq == STEPS + 2
        assert writer.outcome[1].progress is not None and writer.outcome[1].progress.step == STEPS
        counts[interval] = len(statuses)
    assert counts == {0.0: STEPS + 1, 3600.0: 1}


async def test_a_pending_status_is_written_within_the_interval_without_a_flush(
    kafka: LocalKafka, topics: Topics, producer: AIOKafkaProducer
) -> None:
    writer = EventWriter(producer, topics, queued("trailing"), status_interval_s=0.2)
    try:
        writer.emit(EventType.STARTED, {"runner_id": "r"})
        writer.emit(EventType.PROGRESS, progress(1))
        writer.emit(EventType.PROGRESS, progress(2))  # then nothing: the job is decoding its image
        newest = await statuses_until(kafka.bootstrap, topics.state, "trailing", lambda ss: any(s.seq == 3 for s in ss))
        assert newest[-1].progress is not None and newest[-1].progress.step == 2
    finally:
        await writer.close()


async def test_after_a_crash_a_new_attempt_never_reuses_a_seq_already_written(
    kafka: LocalKafka, topics: Topics, producer: AIOKafkaProducer
) -> None:
    job_id = "crashed"
    first = EventWriter(producer, topics, queued(job_id), status_interval_s=3600)
    first.emit(EventType.STARTED, {"runner_id": "r1"})
    await first.flush()  # as the runner does: the started status lands before any step
    for step in range(1, 11):
        first.emit(EventType.PROGRESS, progress(step))
        first.emit(EventType.PREVIEW, {"step": step, "total": STEPS})
    written = await events_until(kafka.bootstrap, topics.events, job_id, lambda es: len(es) == 21)
    await first.close()  # the crash: its newest status never written
    [*_, left] = await statuses_until(kafka.bootstrap, topics.state, job_id, bool)
    assert left.state is JobState.IN_PROGRESS and left.seq < max(e.seq for e in written)  # the state lags

    second = EventWriter(producer, topics, left, status_interval_s=3600)
    try:
        started = second.emit(EventType.STARTED, {"runner_id": "r2"})
        assert started is not None and started.seq > max(e.seq for e in written)
        assert second.status.attempt == 2
    finally:
        await second.close()


async def test_an_attempt_keeps_to_the_events_its_successor_skips(topics: Topics, producer: AIOKafkaProducer) -> None:
    """Progress and previews past the allowance are dropped, whatever the pipeline reports."""
    writer = EventWriter(producer, topics, queued("bounded", steps=2), status_interval_s=3600)
    try:
        writer.emit(EventType.STARTED, {"runner_id": "r"})
        kept = [writer.emit(EventType.PROGRESS, progress(step)) for step in range(1, 20)]
        allowed = events_per_attempt(writer.status) - 2
        assert sum(e is not None for e in kept) == allowed
        done = writer.emit(EventType.COMPLETED, {"outputs": [], "seeds": [1]})
        assert done is not None and done.seq == 1 + allowed + 1
        await writer.flush()
    finally:
        await writer.close()


async def test_a_job_through_the_stack_writes_every_progress_event_and_ends_on_its_newest_status(
    stack: Stack, client: httpx.Client, job_spec: dict[str, object]
) -> None:
    job_id = client.post("/v1/jobs", json={**job_spec, "steps": STEPS}).json()["id"]
    bootstrap, topics = stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix)
    events = await job_events(bootstrap, topics.events, job_id)
    assert [e.type for e in events].count(EventType.PROGRESS) == STEPS
    terminal = next(e for e in events if e.type.is_terminal)
    statuses = await statuses_until(bootstrap, topics.state, job_id, lambda ss: any(s.is_terminal for s in ss))
    print(f"{STEPS}-step job: {len(statuses)} state records, {len(events)} events")  # measured for the report
    assert len(statuses) <= STEPS + 3  # queued, started, at most one per step, the outcome
    last = statuses[-1]
    assert last.is_terminal and last.seq == terminal.seq
    assert last.progress is not None and last.progress.step == STEPS  # the outcome's status carries the newest
    assert [s.seq for s in statuses] == sorted(s.seq for s in statuses)
