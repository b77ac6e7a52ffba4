"""One subscriber's bounded queue: the stream hub offers, the connection's sender takes.

`offer` never blocks and never awaits, so a slow or stuck client can delay nobody but itself.
When the queue is full, progress and previews are coalesced to the latest per job; lifecycle
events (queued, started, terminal) are never dropped. A client so far behind that even those
overflow the hard limit is told to go away (`Overflowed`) and can resume with its last seq.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from contract.events import EventType

COALESCIBLE = frozenset({EventType.PROGRESS, EventType.PREVIEW})
HARD_LIMIT_FACTOR = 4  # lifecycle events may exceed the soft size up to this many times


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One message for subscribers, rendered once and shared by all of them.

    `type` is None for control messages (acknowledgements, errors), which carry no seq.
    """

    job_id: str
    seq: int
    type: EventType | None
    payload: bytes

    @property
    def is_terminal(self) -> bool:
        return self.type is not None and self.type.is_terminal


class Overflowed(Exception):
    """The subscriber fell too far behind; it should reconnect with the last seq it saw."""


class Subscription:
    def __init__(self, maxsize: int, previews: bool = True) -> None:
        self.maxsize = max(1, maxsize)
        self.previews = previews
        self.coalesced = 0  # how many events were dropped in favour of a later one
        self._items: deque[StreamItem] = deque()
        self._last_seq: dict[str, int] = {}
        self._ready = asyncio.Event()
        self._overflowed = False

    def __len__(self) -> int:
        return len(self._items)

    def last_seq(self, job_id: str) -> int:
        return self._last_seq.get(job_id, -1)

    def seen(self, job_id: str, seq: int) -> None:
        """The client already has the job's events up to `seq` (it resumes after it)."""
        self._last_seq[job_id] = max(seq, self._last_seq.get(job_id, -1))

    def offer(self, item: StreamItem) -> None:
        """Queue an event unless this subscriber already has it (or one after it)."""
        if self._overflowed or item.seq <= self._last_seq.get(item.job_id, -1):
            return
        if item.type is EventType.PREVIEW and not self.previews:
            return
        self._last_seq[item.job_id] = item.seq
        self._put(item)

    def put_control(self, payload: bytes) -> None:
        self._put(StreamItem(job_id="", seq=-1, type=None, payload=payload))

    async def get(self) -> StreamItem:
        """The next item; cancellation-safe (nothing is taken until it returns)."""
        while not self._items:
            if self._overflowed:
                raise Overflowed
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def _put(self, item: StreamItem) -> None:
        self._items.append(item)
        if len(self._items) > self.maxsize:
            self._coalesce()
            if len(self._items) > self.maxsize * HARD_LIMIT_FACTOR:
                self._overflowed = True
                self._items.clear()
        self._ready.set()

    def _coalesce(self) -> None:
        """Keep only the latest progress and the latest preview of each job, in order."""
        latest: set[tuple[str, EventType]] = set()
        kept: deque[StreamItem] = deque()
        for item in reversed(self._items):
            if item.type in COALESCIBLE:
                slot = (item.job_id, item.type)
                if slot in latest:
                    self.coalesced += 1
                    continue
                latest.add(slot)
            kept.appendleft(item)
        self._items = kept
