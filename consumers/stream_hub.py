"""The stream hub: every job event, fanned out to this instance's WebSocket and SSE subscribers.

Each service instance runs one. It reads the events topic without a consumer group, so every
instance sees every event and any instance can serve any subscriber. On start it replays the last
`stream_replay_s` of the topic into a bounded per-job history, so a client can resume with
`since=<seq>` on an instance that restarted. Fan-out only appends to per-subscriber bounded queues
(`Subscription.offer` never blocks): a slow client never holds up the consumer or other clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress

import structlog
from pydantic import ValidationError

from consumers.stream_history import StreamHistory
from consumers.subscription import StreamItem, Subscription
from consumers.topic_mirror import StartAt, TopicMirror
from contract.errors import KafkaUnavailable
from contract.events import Event, EventType
from contract.serialization import decode
from contract.settings import Settings
from contract.topics import Topics
from producers.background import Background
from producers.retry import retry_forever

log = structlog.get_logger(__name__)
OWNER_PREFIX = "\0owner:"  # cannot clash with a job id

Render = Callable[[Event], bytes]
# The id of the key that owns a job, or None when it is not known (yet).
OwnerLookup = Callable[[str], Awaitable[str | None]]


class StreamHub:
    def __init__(self, settings: Settings, render: Render, owner_of: OwnerLookup) -> None:
        self._settings = settings
        self._render = render
        self._owner_of = owner_of
        self.history = StreamHistory(settings.stream_history_jobs, settings.stream_history_events)
        self._by_job: dict[str, set[Subscription]] = {}
        self._by_owner: dict[str, set[Subscription]] = {}
        self._names: dict[Subscription, set[str]] = {}  # what each subscription follows, for unsubscribe
        self._resolving: set[str] = set()
        self._queued: dict[str, float] = {}  # jobs waiting for a runner, oldest first: for queue positions
        self._mirror = TopicMirror(settings, Topics(settings.topic_prefix).events, self._apply, "easel-stream-hub")
        self._ready = asyncio.Event()
        self._background = Background("stream hub")

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def alive(self) -> bool:
        """Following the events topic now (it reconnects by itself when Kafka failed it)."""
        return self._mirror.alive

    def lag_s(self) -> float:
        """Seconds since the hub last had every event on the topic (see TopicMirror.lag_s)."""
        return self._mirror.lag_s()

    async def start(self) -> None:
        """Connect and replay in the background; `wait_ready` tells when subscribers can be served."""
        self._background.spawn(self._follow())

    async def stop(self) -> None:
        await self._background.stop()
        await self._mirror.stop()

    async def wait_ready(self, timeout_s: float) -> bool:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        return self.ready

    async def sync(self) -> None:
        """Wait until every event written before this call is in the history (KafkaUnavailable if it cannot)."""
        await self._mirror.sync()

    def last_seq(self, job_id: str) -> int:
        history = self.history.get(job_id)
        return history.last_seq if history is not None else -1

    def has_terminal(self, job_id: str) -> bool:
        history = self.history.get(job_id)
        return history is not None and history.finished

    def render(self, event: Event) -> StreamItem:
        return StreamItem(job_id=event.job_id, seq=event.seq, type=event.type, payload=self._render(event))

    def subscribe_job(self, subscription: Subscription, job_id: str, since: int = -1) -> None:
        """Replay the job's history after `since`, then follow it live (no await between: no gap)."""
        subscription.seen(job_id, since)
        if (history := self.history.get(job_id)) is not None:
            for item in history.after(since):
                subscription.offer(item)
        self._by_job.setdefault(job_id, set()).add(subscription)
        self._names.setdefault(subscription, set()).add(job_id)

    def subscribe_owner(self, subscription: Subscription, owner: str) -> None:
        """Every job of `owner` from now on."""
        self._by_owner.setdefault(owner, set()).add(subscription)
        self._names.setdefault(subscription, set()).add(OWNER_PREFIX + owner)

    def unsubscribe_job(self, subscription: Subscription, job_id: str) -> None:
        _discard(self._by_job, job_id, subscription)
        self._names.get(subscription, set()).discard(job_id)

    def unsubscribe(self, subscription: Subscription) -> None:
        for name in self._names.pop(subscription, ()):
            if name.startswith(OWNER_PREFIX):
                _discard(self._by_owner, name.removeprefix(OWNER_PREFIX), subscription)
            else:
                _discard(self._by_job, name, subscription)

    async def _follow(self) -> None:
        """Replay the last `stream_replay_s`, then follow; when Kafka fails us, do both again
        (the mirror logs why; the history skips what it already has)."""
        while True:
            await retry_forever(self._replay, "stream hub")
            with suppress(KafkaUnavailable):
                await self._mirror.join()
            await self._mirror.stop()

    async def _replay(self) -> None:
        await self._mirror.start(StartAt.seconds_ago(self._settings.stream_replay_s))
        self._ready.set()
        log.info("stream hub ready", jobs=len(self.history))

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        try:
            event = decode(Event, raw_value or b"")
        except (ValidationError, ValueError) as exc:
            log.warning("unreadable event skipped", error=str(exc)[:200])
            return
        if event.type is EventType.QUEUED:
            event = event.model_copy(update={"data": {**event.data, "queue_position": self._enqueue(event)}})
        elif event.type is EventType.STARTED or event.type.is_terminal:
            self._queued.pop(event.job_id, None)
        item = self.render(event)
        if not self.history.append(item):
            return
        for subscription in self._by_job.get(event.job_id, ()):
            subscription.offer(item)
        if self._by_owner:
            self._publish_to_owner(event.job_id, item)

    def _publish_to_owner(self, job_id: str, item: StreamItem) -> None:
        history = self.history.get(job_id)
        assert history is not None
        if history.owner is not None:
            for subscription in self._by_owner.get(history.owner, ()):
                subscription.offer(item)
        elif job_id not in self._resolving:
            self._resolving.add(job_id)
            self._background.spawn(self._resolve_owner(job_id))

    async def _resolve_owner(self, job_id: str) -> None:
        """Look the owner up (the state view may trail the events topic), then deliver what it missed."""
        try:
            owner = await self._owner_of(job_id)
        except Exception as exc:  # Kafka away: key-wide subscribers miss this job, as they would any
            log.warning("owner lookup failed", job_id=job_id, error=repr(exc)[:200])
            return
        finally:
            self._resolving.discard(job_id)
        history = self.history.get(job_id)
        if owner is None or history is None:
            return
        history.owner = owner
        for subscription in self._by_owner.get(owner, ()):
            for item in history.after(subscription.last_seq(job_id)):
                subscription.offer(item)

    def _enqueue(self, event: Event) -> int:
        """How many jobs were waiting ahead of this one when it was queued (approximate across runners)."""
        horizon = time.time() - self._settings.stream_replay_s
        while self._queued and next(iter(self._queued.values())) < horizon:
            del self._queued[next(iter(self._queued))]  # never started within the window: forget it
        position = len(self._queued)
        self._queued[event.job_id] = event.ts
        return position


def _discard(registry: dict[str, set[Subscription]], name: str, subscription: Subscription) -> None:
    subs = registry.get(name)
    if subs is not None:
        subs.discard(subscription)
        if not subs:
            del registry[name]
