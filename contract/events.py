"""Job events, one topic for all of them. `seq` only increases per job: by one within an attempt; a
new attempt after a crash skips past whatever the crashed one could have written (contract/lifecycle.py `resumed`)."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contract.states import JobState


class EventType(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    PREVIEW = "preview"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def state(self) -> JobState | None:
        """The job state this event moves to, if it moves one."""
        return _STATE_OF.get(self)

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_EVENTS


_STATE_OF = {
    EventType.QUEUED: JobState.IN_QUEUE,
    EventType.STARTED: JobState.IN_PROGRESS,
    EventType.COMPLETED: JobState.COMPLETED,
    EventType.FAILED: JobState.FAILED,
    EventType.CANCELLED: JobState.CANCELLED,
    EventType.TIMED_OUT: JobState.TIMED_OUT,
}
_TERMINAL_EVENTS = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED, EventType.TIMED_OUT})


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    seq: int
    type: EventType
    ts: float = Field(default_factory=time.time)
    data: dict[str, Any] = Field(default_factory=dict)
