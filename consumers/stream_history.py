"""The bounded per-job event history a stream hub replays to late and reconnecting subscribers.

Bounded twice: per job (oldest progress and previews go first; lifecycle events always stay) and
in jobs (the least recently active job goes first). A finished job keeps only its last preview.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from consumers.subscription import COALESCIBLE, StreamItem
from contract.events import EventType


@dataclass
class JobHistory:
    items: list[StreamItem] = field(default_factory=list)
    owner: str | None = None

    @property
    def last_seq(self) -> int:
        return self.items[-1].seq if self.items else -1

    @property
    def finished(self) -> bool:
        return bool(self.items) and self.items[-1].is_terminal

    def after(self, seq: int) -> Iterator[StreamItem]:
        return (item for item in self.items if item.seq > seq)


class StreamHistory:
    def __init__(self, max_jobs: int, max_events: int) -> None:
        self.max_jobs = max(1, max_jobs)
        self.max_events = max(8, max_events)
        self._jobs: OrderedDict[str, JobHistory] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, job_id: str) -> JobHistory | None:
        return self._jobs.get(job_id)

    def append(self, item: StreamItem) -> bool:
        """Record an event; False for a duplicate or stale one (same or lower seq), which is skipped."""
        history = self._jobs.get(item.job_id)
        if history is None:
            history = self._jobs[item.job_id] = JobHistory()
            if len(self._jobs) > self.max_jobs:
                self._jobs.popitem(last=False)
        elif item.seq <= history.last_seq or (history.finished and item.type is not EventType.QUEUED):
            return False  # after a terminal event only a retry's `queued` (a higher seq) reopens the job
        self._jobs.move_to_end(item.job_id)
        history.items.append(item)
        if item.is_terminal:
            history.items = _without_older_previews(history.items)
        elif len(history.items) > self.max_events:
            _drop_oldest_coalescible(history.items)
        return True


def _without_older_previews(items: list[StreamItem]) -> list[StreamItem]:
    last_preview = max((i for i, item in enumerate(items) if item.type is EventType.PREVIEW), default=-1)
    return [item for i, item in enumerate(items) if item.type is not EventType.PREVIEW or i == last_preview]


def _drop_oldest_coalescible(items: list[StreamItem]) -> None:
    for index, item in enumerate(items):
        if item.type in COALESCIBLE:
            del items[index]
            return
