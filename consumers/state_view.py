"""The state view: the latest `JobStatus` of every live or retained job, rebuilt from the compacted state topic.

Each service instance (and each runner) keeps its own copy, so reads never leave the process and
instances stay stateless. `sync()` is a read-your-writes barrier; `wait_for()` serves sync waits.

Sized by what is live:
- Per-owner indexes (all of an owner's jobs; its queued and running ones; every running job), so a route
  about one key costs O(that key's jobs), never O(all jobs).
- Queued and running jobs are kept as `JobStatus`es. Finished ones are kept as one bytes object each: a
  fixed header with what the indexes and retention read, then the record as it came from Kafka,
  compressed (zstd) against a preset dictionary of a typical status: a few hundred bytes a job.
- A finished job's record is validated whole only when read (`get`): a replay of 100,000 retained jobs
  reads just the header fields of each. A record that fails then is skipped like an unreadable one.
- A finished job is retained for EASEL_RETENTION_S, then `get` answers None. The retention purger
  (service/retention.py) takes such jobs from `due()`, deletes their images, writes their tombstones and
  `forget`s them. A record already past retention when it arrives (a restart replaying the topic) is never
  loaded: only its id and image keys wait in `due()`, until a tombstone (from any instance) or `forget`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import struct
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

import structlog
from backports import zstd  # the standard library's compression.zstd from Python 3.14
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consumers.topic_mirror import TopicMirror
from contract.job import Job
from contract.lifecycle import queued_status
from contract.serialization import decode, encode
from contract.settings import Settings
from contract.states import JobState, JobStatus, Output
from contract.topics import Topics

log = structlog.get_logger(__name__)


def past_retention(finished_at: float | None, retention_s: float) -> bool:
    """Whether a job that finished at `finished_at` has outlived EASEL_RETENTION_S (never, while it runs: None)."""
    return finished_at is not None and time.time() - finished_at > retention_s


def expired(status: JobStatus, retention_s: float) -> bool:
    return status.is_terminal and past_retention(finished_time(status), retention_s)


class JobSummary(NamedTuple):
    """What the view knows of a job without decoding its record."""

    job_id: str
    state: JobState
    created_at: float
    finished_at: float | None
    seq: int
    retries: int

    @classmethod
    def of(cls, status: JobStatus) -> JobSummary:
        finished_at = finished_time(status) if status.is_terminal else None
        return cls(status.job_id, status.state, status.created_at, finished_at, status.seq, status.retries)


def finished_time(status: JobStatus) -> float:
    """When a finished job finished. A record written straight to Kafka may leave finished_at out: its last
    update is when it ended."""
    return status.finished_at if status.finished_at is not None else status.updated_at


class _ImageKey(BaseModel):
    key: str


class _Header(BaseModel):
    """The fields of a status record that the indexes and retention read: validated straight from the JSON
    bytes, the others skipped unread, in well under half the time of a whole `JobStatus`."""

    # No cache of the strings it read: one of the latest job ids each would pin memory that a purge frees.
    model_config = ConfigDict(frozen=True, cache_strings=False)

    job_id: str
    owner: str
    state: JobState
    seq: int
    created_at: float
    updated_at: float
    finished_at: float | None = None
    retries: int = 0
    outputs: list[_ImageKey] = Field(default_factory=list)

    @property
    def finished_time(self) -> float:
        """As `finished_time(status)`."""
        return self.finished_at if self.finished_at is not None else self.updated_at

    @property
    def image_keys(self) -> tuple[str, ...]:
        return tuple(output.key for output in self.outputs)


def _typical_record() -> bytes:
    job = Job(prompt="a lighthouse at dusk", id="0" * 32, owner="0" * 16, seed=0)
    output = Output(key=f"{job.id}/0.png", content_type="image/png", width=1024, height=1024, seed=0)
    status = queued_status(job, 0.0).model_copy(update={
        "state": JobState.COMPLETED, "started_at": 0.0, "finished_at": 0.0, "attempt": 1, "runner_id": "runner-0",
        "outputs": [output], "seeds": [0],
    })
    return encode(status)


# zstd's preset dictionary: a typical record, so field names and usual values cost a few bits each.
# It lives in memory only (nothing stored compressed outlives the process), so it may change freely.
_PRESET = zstd.ZstdDict(_typical_record(), is_raw=True)
_PACKED_HEADER = struct.Struct("<ddqBIH")  # created_at, finished_at, seq, state, retries, owner's length
_STATES = tuple(JobState)
_STATE_CODES = {state: code for code, state in enumerate(_STATES)}


class _Packer:
    """Packs finished jobs' records: header, owner, then the record compressed."""

    def __init__(self) -> None:
        # One compressor for every record: setting one up (its dictionary loaded) costs more than compressing.
        self._compressor = zstd.ZstdCompressor(level=1, zstd_dict=_PRESET)

    def pack(self, header: _Header, raw: bytes) -> bytes:
        owner = header.owner.encode()
        fixed = _PACKED_HEADER.pack(
            header.created_at, header.finished_time, header.seq, _STATE_CODES[header.state], header.retries,
            len(owner),
        )
        return fixed + owner + self._compressor.compress(raw, mode=zstd.ZstdCompressor.FLUSH_FRAME)


def _summary(job_id: str, packed: bytes) -> JobSummary:
    created_at, finished_at, seq, state, retries, _ = _PACKED_HEADER.unpack_from(packed)
    return JobSummary(job_id, _STATES[state], created_at, finished_at, seq, retries)


def _owner(packed: bytes) -> str:
    owner_length = _PACKED_HEADER.unpack_from(packed)[-1]
    return packed[_PACKED_HEADER.size:_PACKED_HEADER.size + owner_length].decode()


def _record(packed: bytes) -> bytes:
    """The record as it came from Kafka."""
    owner_length = _PACKED_HEADER.unpack_from(packed)[-1]
    return zstd.decompress(memoryview(packed)[_PACKED_HEADER.size + owner_length:], zstd_dict=_PRESET)


class StateView:
    def __init__(self, settings: Settings) -> None:
        self._retention_s = settings.retention_s
        self._live: dict[str, JobStatus] = {}  # queued and running jobs
        self._finished: dict[str, bytes] = {}  # packed records, in the order they finished (about)
        self._owned: dict[str, set[str]] = {}  # owner → every job id of theirs in the view
        self._live_of: dict[str, set[str]] = {}  # owner → their queued and running job ids
        self._running: set[str] = set()
        self._due: dict[str, tuple[str, ...]] = {}  # past retention on arrival: job id → image keys
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._packer = _Packer()
        self._mirror = TopicMirror(settings, Topics(settings.topic_prefix).state, self.apply, "easel-state-view")

    async def start(self) -> None:
        """Connect, replay the topic to its current end, then keep following it."""
        await self._mirror.start()
        log.info("state view ready", jobs=len(self), due=len(self._due))

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
        """The job's latest status; None when unknown or past retention."""
        if (status := self._live.get(job_id)) is not None:
            return status
        packed = self._finished.get(job_id)
        if packed is None or self._past_retention(_summary(job_id, packed)):
            return None
        try:
            return decode(JobStatus, _record(packed))
        except (ValidationError, ValueError) as exc:  # its header was sound, the rest not: skipped as in apply
            log.warning("unreadable state record skipped", job_id=job_id, error=str(exc)[:200])
            self._drop(job_id)
            return None

    def __len__(self) -> int:
        """Jobs held: queued, running, and finished within retention (or not yet purged)."""
        return len(self._live) + len(self._finished)

    def owned(self, owner: str) -> list[JobSummary]:
        """A summary of each of the owner's jobs within retention, in no particular order."""
        summaries = []
        for job_id in self._owned.get(owner, ()):
            if (status := self._live.get(job_id)) is not None:
                summaries.append(JobSummary.of(status))
            elif not self._past_retention(summary := _summary(job_id, self._finished[job_id])):
                summaries.append(summary)
        return summaries

    def recent(self, owner: str, limit: int) -> list[JobStatus]:
        """The owner's `limit` most recently created jobs, newest first."""
        newest = heapq.nlargest(limit, self.owned(owner), key=lambda summary: summary.created_at)
        return [status for summary in newest if (status := self.get(summary.job_id)) is not None]

    def live(self, owner: str) -> list[JobStatus]:
        """The owner's queued and running jobs."""
        return [self._live[job_id] for job_id in self._live_of.get(owner, ())]

    def queued(self, owner: str) -> list[JobStatus]:
        return [status for status in self.live(owner) if status.state is JobState.IN_QUEUE]

    def running(self, owner: str | None = None) -> list[JobStatus]:
        """Every running job, or the owner's."""
        if owner is not None:
            return [status for status in self.live(owner) if status.state is JobState.IN_PROGRESS]
        return [self._live[job_id] for job_id in self._running]

    def due(self, limit: int) -> list[tuple[str, tuple[str, ...]]]:
        """Up to `limit` finished jobs past retention, oldest first: (job id, its image keys).

        Scans finished jobs in the order they finished and stops at the first one still retained, so a job
        whose status arrived out of that order (a runner's clock ahead) is due a little late, never early.
        """
        found = list(itertools.islice(self._due.items(), limit))
        for job_id, packed in self._finished.items():
            if len(found) >= limit or not self._past_retention(_summary(job_id, packed)):
                break
            found.append((job_id, _Header.model_validate_json(_record(packed)).image_keys))
        return found

    def forget(self, job_ids: Iterable[str]) -> None:
        """Drop jobs whose tombstones were written (their own tombstones, read back later, change nothing)."""
        for job_id in job_ids:
            self._drop(job_id)

    async def wait_for(
        self, job_id: str, done: Callable[[JobStatus], bool], timeout_s: float
    ) -> JobStatus | None:
        """The job's status once `done(status)` holds, or the latest one when `timeout_s` ran out."""
        changed = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(changed)
        try:
            async with asyncio.timeout(timeout_s):
                while (status := self.get(job_id)) is None or not done(status):
                    changed.clear()
                    await changed.wait()
        except TimeoutError:
            pass
        finally:
            watchers = self._watchers[job_id]
            watchers.discard(changed)
            if not watchers:
                del self._watchers[job_id]
        return self.get(job_id)

    def _past_retention(self, summary: JobSummary) -> bool:
        return past_retention(summary.finished_at, self._retention_s)

    def _seq(self, job_id: str) -> int | None:
        if (status := self._live.get(job_id)) is not None:
            return status.seq
        if (packed := self._finished.get(job_id)) is not None:
            return _summary(job_id, packed).seq
        return None

    def apply(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        """Fold in one record of the state topic (a status, or a tombstone: value None)."""
        if raw_value is None:  # tombstone: the job was purged
            if raw_key is not None:
                self._drop(raw_key.decode(errors="replace"))
            return
        try:
            header = _Header.model_validate_json(raw_value)
            # A finished job's record is validated whole when read; a live one's now, as it is kept decoded.
            status = None if header.state.is_terminal else decode(JobStatus, raw_value)
        except (ValidationError, ValueError) as exc:
            log.warning("unreadable state record skipped", error=str(exc)[:200])
            return
        job_id, owner = header.job_id, header.owner
        if (seq := self._seq(job_id)) is not None and seq > header.seq:
            return  # an older write arriving late never rolls a job back
        self._drop(job_id)
        if status is not None:
            self._live[job_id] = status
            self._live_of.setdefault(owner, set()).add(job_id)
            if status.state is JobState.IN_PROGRESS:
                self._running.add(job_id)
            self._owned.setdefault(owner, set()).add(job_id)
        elif past_retention(header.finished_time, self._retention_s):
            self._due[job_id] = header.image_keys
        else:
            self._finished[job_id] = self._packer.pack(header, raw_value)
            self._owned.setdefault(owner, set()).add(job_id)
        for changed in self._watchers.get(job_id, ()):
            changed.set()

    def _drop(self, job_id: str) -> None:
        """Remove the job from every index."""
        self._due.pop(job_id, None)
        if (status := self._live.pop(job_id, None)) is not None:
            owner = status.owner
            _discard(self._live_of, owner, job_id)
            self._running.discard(job_id)
        elif (packed := self._finished.pop(job_id, None)) is not None:
            owner = _owner(packed)
        else:
            return
        _discard(self._owned, owner, job_id)


def _discard(index: dict[str, set[str]], owner: str, job_id: str) -> None:
    if (ids := index.get(owner)) is not None:
        ids.discard(job_id)
        if not ids:
            del index[owner]
