"""Submitting jobs: the status and `queued` event first, then the request, each acknowledged by Kafka.

A submit Kafka does not confirm within the caller's timeout is not abandoned: it settles in the
background, so the job either becomes a normal job or ends FAILED (`NOT_CONFIRMED`), and never stays
IN_QUEUE without its request. The request is handed to the producer only within `settle_s` of the
submit; once handed over, the idempotent producer retries it until Kafka takes it or refuses it for
good, so that answer is awaited without a bound.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from contract.catalog import Catalog
from contract.errors import QueueError, RecordRejected, SubmitRefused, SubmitUnconfirmed
from contract.events import Event, EventType
from contract.job import Job
from contract.lifecycle import advance, job_of, queued_status
from contract.serialization import encode, key
from contract.states import JobStatus
from contract.topics import SIGNATURE_HEADER, Topics, request_signature
from producers.background import Background
from producers.publish import Headers, deadline, enqueue, key_hash, publish, queue_error
from producers.retry import retry_forever

log = structlog.get_logger(__name__)
# The reason a job ends FAILED with when Kafka did not take its request.
NOT_CONFIRMED = "submission was not confirmed by Kafka; not run"


class UnseenSubmits:
    """Jobs submitted here that a state view may not have read yet, by owner: what a queue limit adds to the view.

    Each is kept until the view is seen to have it, or until `view_lag_s` after it was acknowledged (a view that
    lags no more than that has it by then), so owners nobody counts for do not pile up.
    """

    def __init__(self, view_lag_s: float) -> None:
        self._view_lag_s = view_lag_s
        self._ids: dict[str, set[str]] = {}
        self._expiry: list[tuple[float, str, str]] = []  # a heap of (when a view has it, owner, job id)

    def add(self, owner: str, job_id: str) -> None:
        """A submit in flight: counted until `settled` lets it expire."""
        self._ids.setdefault(owner, set()).add(job_id)

    def settled(self, owner: str, job_id: str, written_at: float) -> None:
        """The job's status was written (or given up on) by `written_at`."""
        heapq.heappush(self._expiry, (written_at + self._view_lag_s, owner, job_id))
        while self._expiry and self._expiry[0][0] < time.time():
            _, expired_owner, expired_id = heapq.heappop(self._expiry)
            self.discard(expired_owner, expired_id)

    def discard(self, owner: str, job_id: str) -> None:
        if (ids := self._ids.get(owner)) is not None:
            ids.discard(job_id)
            if not ids:
                del self._ids[owner]

    def held(self, owner: str) -> int:
        """At least `count`: also those a view read since (they drop out on `count` or expiry)."""
        return len(self._ids.get(owner, ()))

    def count(self, owner: str, seen: Callable[[str], bool]) -> int:
        """How many of `owner`'s jobs `seen` (is it in the view?) does not know yet; the ones it knows are dropped."""
        ids = self._ids.get(owner)
        if ids is None:
            return 0
        ids.difference_update([job_id for job_id in ids if seen(job_id)])
        if not ids:
            del self._ids[owner]
        return len(ids)


class JobProducer:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        topics: Topics,
        timeout_s: float,
        settle_s: float,
        signing_secret: str = "",
        catalog: Catalog | None = None,
    ) -> None:
        self._producer = producer
        self._topics = topics
        # Routes each job to its model's request topic (one model: the one topic).
        self._catalog = catalog or Catalog()
        self._timeout_s = timeout_s
        self._settle_s = settle_s
        self._signing_secret = signing_secret
        self._settling = Background("job submissions")
        # Jobs submitted here that a state view may not have read yet; one that lags at most timeout_s has read
        # every job acknowledged longer ago (service.submission refuses submits while its view lags more).
        self.unseen = UnseenSubmits(view_lag_s=timeout_s)

    async def stop(self) -> None:
        """Stop settling submits still in flight (a shutdown: one whose request was not sent may stay IN_QUEUE)."""
        await self._settling.stop()

    async def submit(self, job: Job) -> JobStatus:
        """Return once Kafka acknowledged the job; raise SubmitUnconfirmed or SubmitRefused otherwise.

        The job counts in `unseen` from the call on (before its first await).
        """
        self.unseen.add(job.owner, job.id)
        now = time.time()
        status = queued_status(job, now)
        try:
            await self._publish(job, status, Event(job_id=job.id, seq=0, type=EventType.QUEUED, ts=now))
        except SubmitRefused:  # never queued (its compensation, if Kafka takes it, ends it FAILED)
            self.unseen.discard(job.owner, job.id)
            raise
        except SubmitUnconfirmed:  # written within settle_s, or never
            self.unseen.settled(job.owner, job.id, time.time() + self._settle_s)
            raise
        self.unseen.settled(job.owner, job.id, time.time())
        # Debug: at info, a line per submit cost more than a tenth of the submit path.
        log.debug("job submitted", job_id=job.id, track_id=job.track_id, owner=job.owner)
        return status

    async def requeue(self, status: JobStatus) -> JobStatus:
        """Put a failed or timed-out job back in the queue under its id (RunPod's /retry).

        Raises contract.errors.InvalidTransition for a job in any other state.
        """
        now = time.time()
        queued = Event(job_id=status.job_id, seq=status.seq + 1, type=EventType.QUEUED, ts=now)
        requeued = advance(status, queued)
        await self._publish(job_of(status, now), requeued, queued)
        log.info("job requeued", job_id=status.job_id, track_id=status.track_id, retries=requeued.retries)
        return requeued

    async def _publish(self, job: Job, status: JobStatus, queued: Event) -> None:
        settling = self._settling.spawn(self._settle(job, status, queued))
        try:
            async with asyncio.timeout(self._timeout_s):
                refused = await asyncio.shield(settling)
        except TimeoutError:
            log.warning("submit not confirmed in time; settling it in the background", job_id=job.id)
            raise SubmitUnconfirmed(job.id) from None
        if refused is not None:
            raise SubmitRefused(job.id) from refused

    async def _settle(self, job: Job, status: JobStatus, queued: Event) -> QueueError | None:
        """Queue the job or, failing that, end it FAILED; the error that made it fail, if any.

        Runs to its end whether or not the client still waits.
        """
        try:
            await self._queue(job, status, queued)
        except QueueError as exc:
            log.warning("submit failed; ending the job FAILED", job_id=job.id, error=repr(exc.__cause__ or exc)[:200])
            self._settling.spawn(self._compensate(status))
            return exc
        return None

    async def _queue(self, job: Job, status: JobStatus, queued: Event) -> None:
        """The IN_QUEUE status and `queued` event, then the request once both are acknowledged.

        A runner only sees the request after the status is on the compacted state topic, so this
        status can never land after the runner's IN_PROGRESS and overwrite it.
        """
        job_key = key(job.id)
        hashed = key_hash(job_key)
        request = encode(job)
        async with deadline(self._settle_s, "the job"):
            state_ack = await enqueue(self._producer, self._topics.state, encode(status), job_key, hashed=hashed)
            event_ack = await enqueue(self._producer, self._topics.events, encode(queued), job_key, hashed=hashed)
            await asyncio.wait((state_ack, event_ack))  # cancelled by the deadline, it leaves the sends be
            for ack in (state_ack, event_ack):
                ack.result()  # raises what Kafka answered, if it refused
            topic = self._catalog.request_topic(self._topics, job.model)
            request_ack = await enqueue(self._producer, topic, request, job_key, self._signed(request), hashed)
        try:
            await request_ack
        except KafkaError as exc:
            raise queue_error(exc, "the job") from exc

    def _signed(self, request: bytes) -> Headers:
        """The API's signature, by which runners tell its requests from ones written straight to Kafka."""
        if not self._signing_secret:
            return ()
        return ((SIGNATURE_HEADER, request_signature(self._signing_secret, request)),)

    async def _compensate(self, status: JobStatus) -> None:
        """End the job FAILED, its status before its event as every writer does, retrying until Kafka takes both.

        Written after the job's own records, by the same producer, on the same partitions: they stay in order.
        """
        failed = Event(job_id=status.job_id, seq=status.seq + 1, type=EventType.FAILED, data={"error": NOT_CONFIRMED})
        final, job_key = encode(advance(status, failed)), key(status.job_id)

        async def write() -> None:
            await publish(self._producer, self._topics.state, final, job_key, what="the job's failure")
            await publish(self._producer, self._topics.events, encode(failed), job_key, what="the job's failure")

        try:
            await retry_forever(write, "ending an unconfirmed job FAILED", job_id=status.job_id)
        except RecordRejected:
            log.error("Kafka refused to end an unconfirmed job FAILED", job_id=status.job_id)
            return
        log.info("unconfirmed job ended FAILED", job_id=status.job_id)
