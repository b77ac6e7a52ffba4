"""Every job has exactly one visible outcome, and no write, crash or zombie takes a runner down.

Real broker, real runner processes; jobs are written straight to the requests topic and outcomes read
from the events topic as a read_committed consumer (what every Easel reader is), so an outcome written
in a transaction that was never committed does not count.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contract.events import Event, EventType
from contract.serialization import decode
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from gpu_runner.runner import FAULT_EXIT_CODE
from tests.conftest import HOME
from tests.kafka_io import produce
from tests.processes import EaselProcess, Stack, make_stack

Events = list[Event]
FAULT = {"EASEL_FAULT_AFTER_TERMINAL_STATUS": "1"}


@pytest.fixture
def new_stack(kafka: LocalKafka, tiny_model: str, tmp_path: Path) -> Iterator[Callable[[str], Stack]]:
    """Stacks (runners only) on this test's own topic prefixes, stopped afterwards."""
    stacks: list[Stack] = []

    def create(prefix: str) -> Stack:
        stacks.append(make_stack(kafka.bootstrap, tmp_path / prefix, f"{prefix}-{uuid.uuid4().hex[:6]}", HOME))
        return stacks[-1]

    yield create
    for stack in stacks:
        stack.stop()


def start_runner(stack: Stack, runner_id: str, env: dict[str, str] | None = None) -> EaselProcess:
    """A runner with its own log file per start, ready to take jobs."""
    log_path = stack.workdir / f"{runner_id}-{len(stack.processes)}.log"
    runner = EaselProcess("runner", {**stack.env, "EASEL_RUNNER_ID": runner_id, **(env or {})}, log_path)
    stack.processes.append(runner)
    runner.wait_for_output("runner ready")
    return runner


async def submit(stack: Stack, **spec: object) -> str:
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    job = {"id": job_id, "owner": "tester", "prompt": "x", "width": 64, "height": 64, "steps": 2, "seed": 1, **spec}
    await produce(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).requests, job, key=job_id.encode())
    return job_id


async def events_until(
    stack: Stack, job_id: str, done: Callable[[Events], bool], *, committed: bool = True, linger_s: float = 0.0
) -> Events:
    """The job's events from the beginning until `done(events)` holds, then `linger_s` more."""
    consumer = AIOKafkaConsumer(
        Topics(stack.prefix).events,
        bootstrap_servers=stack.env["EASEL_KAFKA_BOOTSTRAP"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    await consumer.start()
    events: Events = []
    deadline = time.monotonic() + 180
    try:
        while not done(events):
            assert time.monotonic() < deadline, f"gave up waiting; events so far: {[e.type for e in events]}"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                events += [decode(Event, r.value) for r in batch if r.key == job_id.encode() and r.value]
        until = time.monotonic() + linger_s
        while time.monotonic() < until:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                events += [decode(Event, r.value) for r in batch if r.key == job_id.encode() and r.value]
    finally:
        await consumer.stop()
    return events


def terminal(events: Events) -> Events:
    return [e for e in events if e.type.is_terminal]


async def outcome(stack: Stack, job_id: str) -> Events:
    """The job's committed terminal events, once there is one, and whatever a second more brings."""
    return terminal(await events_until(stack, job_id, lambda es: bool(terminal(es)), linger_s=1.0))


def step_reached(step: int) -> Callable[[Events], bool]:
    return lambda events: any(e.type is EventType.PROGRESS and e.data["step"] >= step for e in events)


async def test_an_outcome_kafka_refuses_fails_the_job_and_the_runner_goes_on(new_stack: Callable[[str], Stack]) -> None:
    stack = new_stack("refused")
    # A state topic whose records may be at most 4000 bytes: a status with a 4000-character prompt is over.
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.env["EASEL_KAFKA_BOOTSTRAP"])
    await admin.start()
    try:
        state = NewTopic(Topics(stack.prefix).state, 1, 1, topic_configs={"max.message.bytes": "4000"})
        await admin.create_topics([state])
    finally:
        await admin.close()
    runner = start_runner(stack, "refused-runner")

    big = await submit(stack, prompt="p" * 4000)
    normal = await submit(stack)
    [failed] = await outcome(stack, big)
    assert failed.type is EventType.FAILED
    assert failed.data["error"] == "its outcome could not be stored"
    [completed] = await outcome(stack, normal)
    assert completed.type is EventType.COMPLETED
    assert runner.process.poll() is None


@pytest.mark.slow
async def test_a_runner_killed_mid_job_completes_it_exactly_once_after_restart(
    new_stack: Callable[[str], Stack],
) -> None:
    stack = new_stack("killed")
    runner = start_runner(stack, "killed-runner")
    job_id = await submit(stack, width=256, height=256, steps=60)
    await events_until(stack, job_id, step_reached(3))
    runner.kill()

    start_runner(stack, "killed-runner")  # same id: its partitions come back at once
    [done] = await outcome(stack, job_id)
    assert done.type is EventType.COMPLETED
    events = await events_until(stack, job_id, lambda es: bool(terminal(es)))
    assert [e.type for e in events].count(EventType.STARTED) == 2


@pytest.mark.slow
async def test_a_runner_dying_between_terminal_status_and_commit_leaves_one_outcome(
    new_stack: Callable[[str], Stack],
) -> None:
    stack = new_stack("fault")
    runner = start_runner(stack, "fault-runner", FAULT)
    job_id = await submit(stack)
    assert runner.process.wait(120) == FAULT_EXIT_CODE
    # The terminal status and event were written, in a transaction never committed.
    written = await events_until(stack, job_id, lambda es: bool(terminal(es)), committed=False)
    assert [e.type for e in terminal(written)] == [EventType.COMPLETED]

    start_runner(stack, "fault-runner")
    [done] = await outcome(stack, job_id)
    assert done.type is EventType.COMPLETED
    assert done.seq > terminal(written)[0].seq  # the second attempt's, not the aborted one


@pytest.mark.slow
async def test_a_job_that_crashed_the_runner_three_times_fails_without_running(
    new_stack: Callable[[str], Stack],
) -> None:
    stack = new_stack("crashing")
    runner = start_runner(stack, "crashing-runner", FAULT)
    job_id = await submit(stack)
    for _ in range(2):
        assert runner.process.wait(120) == FAULT_EXIT_CODE
        runner = start_runner(stack, "crashing-runner", FAULT)
    assert runner.process.wait(120) == FAULT_EXIT_CODE

    start_runner(stack, "crashing-runner", FAULT)  # the hook is still on: the job must not run again
    [failed] = await outcome(stack, job_id)
    assert failed.type is EventType.FAILED
    assert failed.data["error"] == "crashed the runner 3 times"
    events = await events_until(stack, job_id, lambda es: bool(terminal(es)))
    assert [e.type for e in events].count(EventType.STARTED) == 3


@pytest.mark.slow
async def test_a_zombie_runner_cannot_end_a_job_a_second_time(new_stack: Callable[[str], Stack]) -> None:
    stack = new_stack("zombie")
    runners = {runner_id: start_runner(stack, runner_id) for runner_id in ("runner-a", "runner-b")}
    job_id = await submit(stack, width=256, height=256, steps=80)
    started = await events_until(stack, job_id, step_reached(1))
    zombie = runners[started[0].data["runner_id"]]

    zombie.process.send_signal(signal.SIGSTOP)  # past the 10 s session timeout: its partitions move
    try:
        [done] = await outcome(stack, job_id)  # finished by the other runner
    finally:
        zombie.process.send_signal(signal.SIGCONT)
    assert done.type is EventType.COMPLETED
    zombie.wait_for_output("fenced: another runner took the partition", timeout_s=180)

    assert len(await outcome(stack, job_id)) == 1
    assert zombie.process.poll() is None
