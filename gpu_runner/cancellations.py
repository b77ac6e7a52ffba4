"""Which jobs were asked to stop: by a client (the runner mirrors the control topic from its retained start), or
by the group (the job's partition went to another runner while it ran here: it is abandoned, not cancelled)."""

from __future__ import annotations

import structlog
from pydantic import ValidationError

from consumers.topic_mirror import TopicMirror
from contract.control import ControlCommand
from contract.serialization import decode
from contract.settings import Settings
from contract.topics import Topics

log = structlog.get_logger(__name__)


class CancelWatcher:
    def __init__(self, settings: Settings) -> None:
        self._cancelled: set[str] = set()
        self._abandoned: set[str] = set()
        # No group: every runner must see every cancel.
        self._mirror = TopicMirror(settings, Topics(settings.topic_prefix).control, self._apply, "easel-runner-control")

    def is_cancelled(self, job_id: str) -> bool:
        """Stop it (at its next step): a client asked, or it was abandoned here."""
        # Read from the generation thread: a set lookup is atomic.
        return job_id in self._cancelled or job_id in self._abandoned

    def requested(self, job_id: str) -> bool:
        """A client asked to stop it (an abandoned job was not cancelled: it writes no outcome here)."""
        return job_id in self._cancelled and job_id not in self._abandoned

    def abandon(self, job_id: str) -> None:
        """Stop the job here: its new runner runs it again. The runner writes no outcome for what stopped."""
        self._abandoned.add(job_id)

    def forget_abandoned(self, job_id: str) -> None:
        """The abandoned attempt ended; should the job come back to this runner, it runs again."""
        self._abandoned.discard(job_id)

    async def start(self) -> None:
        await self._mirror.start()

    async def stop(self) -> None:
        await self._mirror.stop()

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        try:
            command = decode(ControlCommand, raw_value or b"")
        except (ValidationError, ValueError):
            log.warning("unreadable control message skipped")
            return
        self._cancelled.add(command.job_id)
        log.info("cancel requested", job_id=command.job_id)
