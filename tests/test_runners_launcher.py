"""`easel runners`: which devices `--gpus` names, a clear refusal without GPUs, and (as CPU runners on a real broker)
one supervised runner per device that joins the group, comes back after a crash, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from aiokafka.admin import AIOKafkaAdminClient

from contract.errors import SettingsError
from contract.settings import Settings
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from easel.runners import parse_devices, runner_children
from tests.processes import HOME, REPO, child_processes, make_stack


def two_gpus() -> int:
    return 2


def no_gpus() -> int:
    return 0


def test_gpus_name_devices() -> None:
    assert parse_devices("all", two_gpus) == ["cuda:0", "cuda:1"]
    assert parse_devices("1", two_gpus) == ["cuda:1"]
    assert parse_devices("0, 1", two_gpus) == ["cuda:0", "cuda:1"]
    assert parse_devices("cpu:2", no_gpus) == ["cpu", "cpu"]


@pytest.mark.parametrize(
    ("spec", "count", "message"),
    [
        ("all", no_gpus, "no CUDA GPU"),
        ("0", no_gpus, "no CUDA GPU"),
        ("2", two_gpus, "no GPU 2"),
        ("0,0", two_gpus, "distinct"),
        ("first", two_gpus, "expected"),
        ("cpu:0", two_gpus, "cpu:N"),
    ],
)
def test_unusable_gpu_lists_are_refused(spec: str, count: object, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_devices(spec, count)  # type: ignore[arg-type]


def test_each_runner_gets_its_device_and_own_id() -> None:
    children = runner_children(Settings(runner_id="box"), ["cuda:0", "cuda:1"])
    assert [(c.name, c.env["EASEL_DEVICE"], c.env["EASEL_RUNNER_ID"]) for c in children] == [
        ("box-cuda0", "cuda:0", "box-cuda0"),
        ("box-cuda1", "cuda:1", "box-cuda1"),
    ]
    assert [c.argv[-1] for c in children] == ["runner", "runner"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_all_gpus_without_a_gpu_fails_clearly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "easel.cli", "runners", "--gpus", "all"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "no CUDA GPU is visible here" in result.stderr
    assert "Traceback" not in result.stderr


class Launcher:
    """`easel runners --gpus cpu:2` as a subprocess, its output (and its runners') in one log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "easel.cli", "runners", "--gpus", "cpu:2"],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, text: str, count: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.output().count(text) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"not {count} x {text!r}:\n{self.output()[-3000:]}")
            time.sleep(0.2)

    def runners(self) -> dict[int, list[str]]:
        return child_processes(self.process.pid)


async def group_members(bootstrap: str, group: str) -> set[str]:
    """The client ids (easel-runner-<EASEL_RUNNER_ID>) of the group's members, as the broker sees them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        [described] = response.to_object()["groups"]
        return {member["client_id"] for member in described["members"]}
    finally:
        await admin.close()


def wait_for_members(bootstrap: str, group: str, expected: set[str], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (members := asyncio.run(group_members(bootstrap, group))) != expected:
        assert time.monotonic() < deadline, f"group members {members}, expected {expected}"
        time.sleep(0.5)


@pytest.fixture
def launcher(kafka: LocalKafka, tiny_model: str, tmp_path: Path) -> Iterator[tuple[Launcher, str]]:
    stack = make_stack(kafka.bootstrap, tmp_path, f"runners-{uuid.uuid4().hex[:6]}", HOME)
    launcher = Launcher({**stack.env, "EASEL_RUNNER_ID": "box"}, tmp_path / "runners.log")
    try:
        yield launcher, Topics(stack.prefix).runner_group
    finally:
        if launcher.process.poll() is None:  # the test failed before its SIGTERM
            runners = launcher.runners()
            launcher.process.kill()
            launcher.process.wait()
            for pid in runners:
                os.kill(pid, signal.SIGKILL)


def test_runners_join_the_group_restart_after_a_crash_and_stop_on_sigterm(
    kafka: LocalKafka, launcher: tuple[Launcher, str]
) -> None:
    process, group = launcher
    process.wait_until("runner ready", 2)
    output = process.output()
    assert '"box-cpu0"' in output and '"box-cpu1"' in output
    wait_for_members(kafka.bootstrap, group, {"easel-runner-box-cpu0", "easel-runner-box-cpu1"})
    runners = process.runners()
    assert len(runners) == 2 and all(argv[-1] == "runner" for argv in runners.values())

    crashed = next(iter(runners))
    os.kill(crashed, signal.SIGKILL)
    process.wait_until("process restarted", 1)
    process.wait_until("runner ready", 3)
    restarted = process.runners()
    assert len(restarted) == 2 and crashed not in restarted
    wait_for_members(kafka.bootstrap, group, {"easel-runner-box-cpu0", "easel-runner-box-cpu1"})

    process.process.send_signal(signal.SIGTERM)
    assert process.process.wait(60) == 0
    for pid in restarted:  # every runner ended (and was reaped) before the launcher exited
        assert not Path(f"/proc/{pid}").exists()
