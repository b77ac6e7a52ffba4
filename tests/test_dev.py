"""`easel dev` supervises its processes: one that exits is logged and restarted with a backoff, the stack keeps
serving, and only SIGTERM (or Ctrl-C) stops it, every child with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from contract.events import EventType
from contract.topics import Topics
from easel.dev import PROCESSES
from easel.local_kafka import LocalKafka
from easel.supervisor import Backoff, Child, Supervisor
from tests.conftest import HOME
from tests.kafka_io import job_events
from tests.processes import EaselProcess, child_processes, make_stack, wait_for_health

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


def exits_with(code: int) -> Child:
    return Child("failing", [sys.executable, "-c", f"raise SystemExit({code})"], os.environ)


def wait_until_exited(child: Child) -> None:
    assert child.process is not None
    child.process.wait(30)


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first_s=1, max_s=10)
    assert [backoff.delay_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_an_exited_child_is_logged_and_restarted_after_the_backoff() -> None:
    child = exits_with(3)
    supervisor = Supervisor([child], Backoff(first_s=5, max_s=60, healthy_after_s=100))
    with capture_logs() as logs:
        supervisor.start()
        wait_until_exited(child)
        noticed = child.started_at + 1  # one second after the start: a quick exit
        supervisor.check(noticed)
        supervisor.check(noticed + 4.9)  # still waiting
        first_process = child.process
        supervisor.check(noticed + 5)
        wait_until_exited(child)
        supervisor.check(child.started_at + 1)  # a second quick exit: twice the wait
    supervisor.stop()
    assert child.process is not first_process
    assert [(log["event"], log.get("exit_code"), log["restarts"], log.get("restart_in_s")) for log in logs] == [
        ("process exited", 3, 0, 5),
        ("process restarted", None, 1, None),
        ("process exited", 3, 1, 10),
    ]


def test_a_child_that_ran_a_while_restarts_after_the_first_wait_again() -> None:
    child = exits_with(1)
    supervisor = Supervisor([child], Backoff(first_s=2, max_s=60, healthy_after_s=30))
    child.quick_exits = 4  # as after a crash loop
    with capture_logs() as logs:
        supervisor.start()
        wait_until_exited(child)
        supervisor.check(child.started_at + 30)
    assert logs[0]["restart_in_s"] == 2


def wait_until_done(client: httpx.Client, spec: dict[str, object]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    for _ in range(10):  # the runner may still be loading the model
        body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
        if body["state"] in TERMINAL:
            return body
    raise AssertionError(f"job {job_id} not finished: {body}")


def wait_for_step(client: httpx.Client, job_id: str, step: int) -> None:
    for _ in range(600):
        progress = client.get(f"/v1/jobs/{job_id}").json().get("progress") or {}
        if progress.get("step", 0) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached step {step}")


def children_by_command(pid: int) -> dict[str, int]:
    """`easel dev`'s children by subcommand (they run `python -m easel.cli <command>`)."""
    return {argv[-1]: child for child, argv in child_processes(pid).items() if argv[-2:-1] == ["easel.cli"]}


def wait_for_new_child(dev: EaselProcess, command: str, old_pid: int) -> int:
    for _ in range(300):
        pid = children_by_command(dev.process.pid).get(command)
        if pid not in (None, old_pid):
            return pid
        assert dev.process.poll() is None, dev.output()[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"{command} was not restarted:\n{dev.output()[-3000:]}")


def supervisor_records(dev: EaselProcess) -> list[dict[str, Any]]:
    """The supervisor's JSON log lines about exits and restarts (the children write theirs to the same output)."""
    lines = [line for line in dev.output().splitlines() if '"event":"process ' in line]
    return [json.loads(line) for line in lines]


def is_running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.mark.slow
def test_easel_dev_restarts_a_killed_runner_and_sigterm_stops_every_child(
    kafka: LocalKafka, tiny_model: str, job_spec: dict[str, object], tmp_path: Path
) -> None:
    stack = make_stack(kafka.bootstrap, tmp_path, f"dev-{uuid.uuid4().hex[:8]}", HOME)
    # The session's broker (no local one starts), the shared tiny model; a key of its own, not the dev-key file.
    dev = EaselProcess("dev", {**stack.env, "EASEL_DEV_KEY": stack.key}, tmp_path / "dev.log")
    seen: set[int] = set()
    try:
        wait_for_health(stack.base_url, dev)
        children = children_by_command(dev.process.pid)
        assert set(children) == set(PROCESSES), children
        seen |= set(children.values())
        auth = {"Authorization": f"Bearer {stack.key}"}
        with httpx.Client(base_url=stack.base_url, headers=auth, timeout=60) as client:
            assert wait_until_done(client, job_spec)["state"] == "COMPLETED"

            # SIGKILL the runner at step 3 of a 60-step job: the supervisor restarts it, the job runs again.
            long_job = client.post("/v1/jobs", json={**job_spec, "steps": 60}).json()["id"]
            wait_for_step(client, long_job, 3)
            os.kill(children["runner"], signal.SIGKILL)
            restarted = wait_for_new_child(dev, "runner", children["runner"])
            seen.add(restarted)
            finished = client.get(f"/v1/jobs/{long_job}", params={"wait": 60}).json()
            assert (finished["state"], finished["attempt"]) == ("COMPLETED", 2), finished
            events = asyncio.run(job_events(kafka.bootstrap, Topics(stack.prefix).events, long_job))
            assert [e.type for e in events if e.type.is_terminal] == [EventType.COMPLETED]
            assert wait_until_done(client, job_spec)["state"] == "COMPLETED"

        exited, restart = [record for record in supervisor_records(dev) if record["process"] == "runner"][:2]
        assert (exited["event"], exited["exit_code"], exited["restarts"]) == ("process exited", -signal.SIGKILL, 0)
        assert (restart["event"], restart["pid"], restart["restarts"]) == ("process restarted", restarted, 1)
        assert dev.process.poll() is None, "a child's exit does not stop `easel dev`"

        dev.process.send_signal(signal.SIGTERM)
        assert dev.process.wait(60) == 0
        assert not [pid for pid in seen if is_running(pid)], dev.output()[-3000:]
    finally:
        dev.stop()
        for pid in seen:  # only if the test failed before `easel dev` stopped them
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
