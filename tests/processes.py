"""Easel's processes as the tests run them: real subprocesses of `easel api` and `easel runner`."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from easel.local_kafka import LocalKafka, Scram

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".easel"  # the Kafka jars and the tiny model, shared with `make run`
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"easel-test-webhook-secret-32byte").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EaselProcess:
    """One `easel <command>` subprocess, its output in a log file the test can wait on."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "easel.cli", command], env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout_s: float = 90.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.output()[after:]:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"process exited ({self.process.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"no {text!r} within {timeout_s} s:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean-up, no commit, exactly what a crash looks like."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@dataclass
class Stack:
    """An API and a runner on their own topic prefix, so stacks never see each other's jobs."""

    env: dict[str, str]
    workdir: Path
    port: int
    key: str
    processes: list[EaselProcess] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def prefix(self) -> str:
        return self.env["EASEL_TOPIC_PREFIX"]

    def start_api(self, healthy: bool = True) -> EaselProcess:
        """Start the API; wait until /health says 200 (or, with healthy=False, until it answers at all)."""
        api = EaselProcess("api", self.env, self.workdir / "api.log")
        self.processes.append(api)
        wait_for_health(self.base_url, api, healthy)
        return api

    def start_runner(self, runner_id: str = "runner-0") -> EaselProcess:
        runner = EaselProcess("runner", {**self.env, "EASEL_RUNNER_ID": runner_id}, self.workdir / f"{runner_id}.log")
        self.processes.append(runner)
        return runner

    def start_dispatcher(self, dispatcher_id: str = "webhooks-0") -> EaselProcess:
        """The webhook dispatcher; the same id after a kill takes its partitions back at once."""
        env = {**self.env, "EASEL_WEBHOOK_DISPATCHER_ID": dispatcher_id}
        dispatcher = EaselProcess("webhooks", env, self.workdir / f"{dispatcher_id}.log")
        self.processes.append(dispatcher)
        return dispatcher

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    @contextmanager
    def serving(self, runner_id: str = "runner-0") -> Iterator[Stack]:
        """The API and one runner, ready; every process stopped on exit, also when starting failed (so no process
        outlives the test)."""
        try:
            self.start_api()
            self.start_runner(runner_id).wait_for_output("runner ready")
            yield self
        finally:
            self.stop()


def wait_for_health(base_url: str, process: EaselProcess, healthy: bool = True, timeout_s: float = 90.0) -> None:
    """Until the API at `base_url` (served by `process` or one of its children) says 200 on /health, or, with
    healthy=False, answers at all."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200 or not healthy:
                return
        except httpx.TransportError:
            pass
        if process.process.poll() is not None:
            raise RuntimeError(process.output()[-3000:])
        time.sleep(0.2)
    raise TimeoutError(f"API not healthy:\n{process.output()[-3000:]}")


def child_processes(pid: int) -> dict[int, list[str]]:
    """The live processes whose parent is `pid`, with their command lines (from Linux's /proc)."""
    children: dict[int, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command name in parentheses (which may hold spaces): state, then the parent's pid.
            state, parent = stat.read_text().rpartition(")")[2].split()[:2]
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended while we looked
        if int(parent) == pid and state != "Z":
            children[int(stat.parent.name)] = [part.decode() for part in argv if part]
    return children


def make_stack(bootstrap: str, workdir: Path, prefix: str, home: Path) -> Stack:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    key = f"test-key-{prefix}"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "EASEL_KAFKA_BOOTSTRAP": bootstrap,
        "EASEL_TOPIC_PREFIX": prefix,
        "EASEL_PORT": str(port),
        "EASEL_HOME": str(home),
        "EASEL_BLOB_URL": str(workdir / "blobs"),
        "EASEL_API_KEYS": f"{key},other-key-{prefix}",
        "EASEL_LOG_FORMAT": "json",
        "EASEL_SUBMIT_TIMEOUT_S": "3",
        # Previews on every step and short per-connection queues: a stuck stream client falls behind within one job.
        "EASEL_PREVIEW_EVERY": "1",
        "EASEL_STREAM_QUEUE": "16",
        # Webhooks: local receivers allowed, and the retry schedule compressed from hours to seconds.
        "EASEL_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "EASEL_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "EASEL_WEBHOOK_RETRY_SCHEDULE_S": "0,0.2,0.5,3",
    }
    return Stack(env=env, workdir=workdir, port=port, key=key)


@contextmanager
def own_broker(scram: Scram | None = None) -> Iterator[LocalKafka]:
    """A fresh broker on free ports (so test sessions and a `make run` share the machine), its data removed after."""
    broker = LocalKafka(HOME, port=free_port(), controller_port=free_port(), scram=scram)
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)
