"""The state view: the latest `JobStatus` of every job, rebuilt from the compacted state topic.

Each service instance (and each runner) keeps its own copy, so reads never leave the process and
instances stay stateless. `sync()` is a read-your-writes barrier; `wait_for()` serves sync waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from pydantic import ValidationError

from consumers.topic_mirror import TopicMirror
from contract.serialization import decode
from contract.settings import Settings
from contract.states import JobStatus
from contract.topics import Topics

log = structlog.get_logger(__name__)


class StateView:
    def __init__(self, settings: Settings) -> None:
        self._statuses: dict[str, JobStatus] = {}
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._mirror = TopicMirror(settings, Topics(settings.topic_prefix).state, self._apply, "easel-state-view")

    async def start(self) -> None:
        """Connect, replay the topic to its current end, then keep following it."""
        await self._mirror.start()
        log.info("state view ready", jobs=len(self._statuses))

    async def stop(self) -> None:
        await self._mirror.stop()

    @property
    def alive(self) -> bool:
        """Following the state topic now."""
        return self._mirror.alive

    def lag_s(self) -> float:
        """Seconds since the view last had every status on the topic (see TopicMirror.lag_s)."""
        return self._mirror.lag_s()

    async def sync(self) -> None:
        """Wait until everything written to the topic before this call has been applied."""
        await self._mirror.sync()

    def get(self, job_id: str) -> JobStatus | None:
        return self._statuses.get(job_id)

    def statuses(self) -> list[JobStatus]:
        return list(self._statuses.values())

    def __len__(self) -> int:
        return len(self._statuses)

    async def wait_for(
        self, job_id: str, done: Callable[[JobStatus], bool], timeout_s: float
    ) -> JobStatus | None:
        """The job's status once `done(status)` holds, or the latest one when `timeout_s` ran out."""
        changed = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(changed)
        try:
            async with asyncio.timeout(timeout_s):
                while (status := self._statuses.get(job_id)) is None or not done(status):
                    changed.clear()
                    await changed.wait()
        except TimeoutError:
            pass
        finally:
            watchers = self._watchers[job_id]
            watchers.discard(changed)
            if not watchers:
                del self._watchers[job_id]
        return self._statuses.get(job_id)

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        if raw_value is None:  # tombstone: the job was purged
            if raw_key is not None:
                self._statuses.pop(raw_key.decode(errors="replace"), None)
            return
        try:
            status = decode(JobStatus, raw_value)
        except (ValidationError, ValueError) as exc:
            log.warning("unreadable state record skipped", error=str(exc)[:200])
            return
        current = self._statuses.get(status.job_id)
        if current is not None and current.seq > status.seq:
            return  # an older write arriving late never rolls a job back
        self._statuses[status.job_id] = status
        for changed in self._watchers.get(status.job_id, ()):
            changed.set()
