"""Keeps a set of child processes running: one that exits is logged and started again after a backoff.

The wait doubles with each exit that comes soon after a start, up to a cap, and starts over once a process
stayed up for a while, so a crash loop neither spins nor keeps a recovered process waiting. Only a stop
request (Ctrl-C, SIGTERM) ends supervision; the children then stop one at a time, in the order given.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from easel.lifecycle import StopRequest, stop_process

log = structlog.get_logger(__name__)

POLL_S = 0.2
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Backoff:
    first_s: float = 1.0
    max_s: float = 30.0
    # A process that ran this long before exiting was healthy: its next restart waits `first_s` again.
    healthy_after_s: float = 60.0

    def delay_s(self, quick_exits: int) -> float:
        """The wait before a restart, after `quick_exits` exits in a row that each came soon after a start."""
        return min(self.max_s, self.first_s * 2.0 ** max(quick_exits - 1, 0))


class Child:
    """One supervised command: its current process and its restart history."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.quick_exits = 0
        self.restart_at: float | None = None  # set while it waits to be started again

    def start(self) -> None:
        # Its own session: Ctrl-C in a terminal reaches only the supervisor, which stops children in order.
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None

    def poll(self) -> int | None:
        """The exit code once the process ended, None while it runs (or waits to be restarted)."""
        if self.process is None or self.restart_at is not None:
            return None
        return self.process.poll()

    def stop(self, timeout_s: float) -> None:
        if self.process is not None and stop_process(self.process, timeout_s):
            log.warning("process did not stop in time; it was killed", process=self.name, timeout_s=timeout_s)


class Supervisor:
    def __init__(self, children: Sequence[Child], backoff: Backoff | None = None) -> None:
        self.children = list(children)
        self.backoff = backoff or Backoff()

    def run(self, stop: StopRequest) -> None:
        """Start every child and keep them running until a stop is requested; then stop them in order."""
        try:
            self.start()
            while not stop.requested:
                self.check(time.monotonic())
                time.sleep(POLL_S)
        finally:
            self.stop()

    def start(self) -> None:
        for child in self.children:
            child.start()

    def check(self, now: float) -> None:
        """Notice exits and schedule their restarts; start the children whose wait is over."""
        for child in self.children:
            if child.restart_at is not None and now >= child.restart_at:
                child.start()
                child.restarts += 1
                assert child.process is not None
                log.info("process restarted", process=child.name, pid=child.process.pid, restarts=child.restarts)
            elif (code := child.poll()) is not None:
                self._schedule_restart(child, code, now)

    def stop(self) -> None:
        log.info("stopping", processes=[child.name for child in self.children])
        for child in self.children:
            child.stop(STOP_TIMEOUT_S)

    def _schedule_restart(self, child: Child, code: int, now: float) -> None:
        uptime_s = now - child.started_at
        child.quick_exits = 1 if uptime_s >= self.backoff.healthy_after_s else child.quick_exits + 1
        delay_s = self.backoff.delay_s(child.quick_exits)
        child.restart_at = now + delay_s
        killed_by = {"signal": signal.strsignal(-code)} if code < 0 else {}
        log.warning(
            "process exited",
            process=child.name,
            exit_code=code,
            **killed_by,
            uptime_s=round(uptime_s, 1),
            restarts=child.restarts,
            restart_in_s=delay_s,
        )
