"""The runner process: consume job requests in a group, run each, and write its outcome exactly once.

Every request ends in one Kafka transaction (gpu_runner/outcomes.py) holding what it led to (the
terminal status and event, a dead letter) and the group's offset past it: a crash before the commit
leaves nothing visible to read_committed readers and the request is read again; after it, never.
Started and progress events are written at once, outside any transaction: they are not the outcome.

A redelivered job resumes its seq from the state view. One that already ended has its terminal event
published again with the same seq (readers dedupe by seq). One that started `max_job_attempts` times
without ending crashed its runners that often: it fails without running again. Nothing but
cancellation ends the consume loop: a write Kafka refuses for good fails the job, so does a bug in
handling it, and while Kafka is away the runner waits and retries. Generation runs in a worker
thread, so the consumer keeps heartbeating through long jobs.

Fairness and batching: the first job of each batch comes from the runner's partitions in turn, so one
partition's backlog never holds back the others; compatible jobs at the partitions' heads (taken in
the same turn) fill the batch up to EASEL_BATCH_MAX_IMAGES images (gpu_runner/batching.py), from what
is already read or arrives within EASEL_BATCH_WINDOW_S. The batch's jobs share one pipeline call and
end on their own; a partition's offset commits in order, never past a job still running.
Rebalances: the running batch keeps going while the group rebalances (no member waits for it), and
the sticky assignment keeps its partitions here where balance allows (a runner joining takes idle
partitions). If a partition comes back here, its jobs finish and commit as usual; if it went to
another runner, they stop at their next step and write no outcome: the new owner runs them again
(attempt + 1).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeAlias

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from consumers.kafka import Partitions, Rebalance, group_consumer, note_generation, sticky_assignor
from consumers.state_view import StateView
from contract.blobs import open_blob_store
from contract.catalog import Catalog
from contract.errors import RecordRejected, SettingsError
from contract.events import Event, EventType
from contract.job import JOB_ID_PATTERN, Job
from contract.lifecycle import advance, queued_status, slimmed, terminal_event
from contract.serialization import decode, encode, key
from contract.settings import Settings
from contract.states import JobState, JobStatus
from contract.topics import Topics, signed_by_api
from gpu_runner.batching import BatchFill, OffsetLedger
from gpu_runner.cancellations import CancelWatcher
from gpu_runner.execution import BatchExecution, JobExecution
from gpu_runner.outcomes import Fenced, Outcomes, Write
from gpu_runner.pipeline import SDXLGenerator
from producers import EventWriter, ensure_topics, open_producer
from producers.dead_letters import dead_letter_headers

log = structlog.get_logger(__name__)
Record: TypeAlias = ConsumerRecord[bytes, bytes]
FAULT_EXIT_CODE = 86  # the test-only fault hook's exit status
# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). The generation thread
# needs the GIL between torch ops; when the event loop's thread (Kafka clients, each step's events) holds it, the
# pipeline stalls. At 0.5 ms the runner's pipeline call measured 20-25 ms closer to a bare one per 256² job
# (BENCHMARKS.md, "Easel beside its inline peer").
GIL_SWITCH_INTERVAL_S = 0.0005


class Runner:
    def __init__(self, settings: Settings, generator: SDXLGenerator) -> None:
        if settings.kafka_direct_owners and not settings.job_signing_secret:
            raise SettingsError(
                "EASEL_KAFKA_DIRECT_OWNERS needs EASEL_JOB_SIGNING_SECRET (the API's) to tell its jobs from direct ones"
            )
        self.settings = settings
        self.generator = generator
        self.topics = Topics(settings.topic_prefix)
        self.runner_id = settings.runner_id or f"{socket.gethostname()}-{id(self):x}"
        self.blobs = open_blob_store(settings)
        self.view = StateView(settings)
        self.cancels = CancelWatcher(settings)
        # Every configured model, and the one this runner holds (EASEL_MODEL_NAME): it reads only that model's
        # request topic, in that model's group.
        self.models = Catalog.from_settings(settings)
        self.catalog = self.models.serving(settings.model_name)
        route = self.models.route(settings.model_name)
        self.request_topic = self.topics.requests_for(route)
        self.group = self.topics.runner_group_for(route)
        # A namespace of transactional ids per model: runners of two models never fence each other.
        self.outcomes = Outcomes(settings, self.group, self.topics.runner_transactions_for(route))
        # Set when partitions are (re)assigned: their jobs may carry an earlier attempt's writes.
        self._assigned = asyncio.Event()
        # Clear while the group rebalances: nobody knows yet who holds which partition, so nothing commits.
        self._settled = asyncio.Event()
        self._revoked_partitions: Partitions = set()
        # The batch's requests in hand (empty between batches) and the partitions of its jobs generating now; the
        # partition served last (the turn starts after it); each partition's next request, read but not taken (it
        # did not fit the batch); partitions lost during the batch (their other jobs commit nothing).
        self._running: list[Record] = []
        self._running_jobs: dict[str, TopicPartition] = {}
        self._last_served = TopicPartition("", -1)
        self._lookahead: dict[TopicPartition, Record] = {}
        self._lost: set[TopicPartition] = set()
        self._ledger = OffsetLedger(())
        self._committing = asyncio.Lock()  # one transaction at a time: a partition's offsets move in order
        self._assignor = sticky_assignor()

    async def run(self) -> None:
        await ensure_topics(self.settings)
        # Started and progress events: written at once, outside the outcome's transaction.
        self.producer = await open_producer(self.settings, Topics.runner_client_id(self.runner_id))
        consumer = group_consumer(
            self.settings,
            [self.request_topic],
            group_id=self.group,
            client_id=Topics.runner_client_id(self.runner_id),
            instance_id=self.settings.runner_id,
            rebalance=Rebalance(on_revoked=self._revoked, on_assigned=self._on_assigned),
            # A job may take up to its timeout between two polls.
            work_timeout_s=self.settings.job_timeout_s,
            max_poll_records=1,
            assignor=self._assignor,
        )
        self.consumer = consumer
        try:
            await self.view.start()
            await self.cancels.start()
            # Before joining the group: the first job should not pay for lazy CUDA set-up (or compilation).
            await self.generator.run_in_thread(self.generator.warm_up)
            await consumer.start()
            log.info(
                "runner ready", runner_id=self.runner_id, device=self.generator.device,
                model=self.catalog.model_name, topic=self.request_topic,
            )
            while True:
                try:
                    await self._consume_one(consumer)
                except Exception:  # never the end of the runner: the next poll may work
                    log.exception("consuming failed; going on")
                    await asyncio.sleep(1)
        finally:
            await consumer.stop()
            await self.cancels.stop()
            await self.view.stop()
            await self.outcomes.stop()
            await self.producer.stop()
            await self.blobs.close()

    async def _consume_one(self, consumer: AIOKafkaConsumer) -> None:
        records = await self._next_batch(consumer)
        if not records:
            return
        self._last_served = _partition_of(records[0])
        try:
            await self._settle_batch(consumer, records)
        finally:
            self._running = []
            self._lost.clear()
            for tp in {_partition_of(record) for record in records}:
                if tp not in consumer.assignment():  # it moved while the batch ran: its producer is no use here
                    await self.outcomes.release([tp.partition])

    async def _next_batch(self, consumer: AIOKafkaConsumer) -> list[Record]:
        """The next request in turn, and the compatible ones that fill its batch (gpu_runner/batching.py): from
        what is already read, or arrives within EASEL_BATCH_WINDOW_S. Incompatible heads wait in `_lookahead`."""
        first = await self._next_request(consumer)
        if first is None:
            return []
        self._running = [first]
        job = _job_in(first)
        if job is None or self.settings.batch_max_images <= 1:
            return self._running
        fill = BatchFill(job, self.settings.batch_max_images)
        closed: set[TopicPartition] = set()
        deadline = time.monotonic() + self.settings.batch_window_s
        while not fill.is_full():
            took = False
            for tp in self._turn(consumer, after=_partition_of(first)):
                if tp in closed or (record := await self._peek(consumer, tp)) is None:
                    continue
                candidate = _job_in(record)
                if candidate is None or not fill.accepts(candidate):
                    closed.add(tp)  # its head waits for a later batch; nothing behind it may go first
                    continue
                fill.add(candidate)
                self._running.append(self._lookahead.pop(tp))
                took = True
                if fill.is_full():
                    break
            remaining = deadline - time.monotonic()
            if not took and remaining <= 0:
                break
            if not took:
                await self._read_ahead(consumer, closed, remaining)
        return self._running

    async def _next_request(self, consumer: AIOKafkaConsumer) -> Record | None:
        """One request, from the partitions in turn after the one served last; waits up to a second for one."""
        for tp in self._turn(consumer, after=self._last_served):
            if await self._peek(consumer, tp) is not None:
                return self._lookahead.pop(tp)
        batches = await consumer.getmany(timeout_ms=1000, max_records=1)  # every one was empty: the first to fill
        return next((records[0] for records in batches.values() if records), None)

    def _turn(self, consumer: AIOKafkaConsumer, after: TopicPartition) -> list[TopicPartition]:
        return sorted(consumer.assignment(), key=lambda tp: (tp <= after, tp))

    async def _peek(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> Record | None:
        """The partition's next request, read already or now (without waiting); it stays in `_lookahead`."""
        if tp not in self._lookahead and (records := (await consumer.getmany(tp, timeout_ms=0, max_records=1)).get(tp)):
            self._lookahead[tp] = records[0]
        return self._lookahead.get(tp)

    async def _read_ahead(self, consumer: AIOKafkaConsumer, closed: set[TopicPartition], wait_s: float) -> None:
        """Wait up to `wait_s` for a request on a partition whose next one is not read yet."""
        open_partitions = [tp for tp in consumer.assignment() if tp not in closed and tp not in self._lookahead]
        if not open_partitions:
            await asyncio.sleep(wait_s)
            return
        batches = await consumer.getmany(*open_partitions, timeout_ms=int(wait_s * 1000), max_records=1)
        for tp, records in batches.items():
            if records:
                self._lookahead[tp] = records[0]

    async def _settle_batch(self, consumer: AIOKafkaConsumer, records: list[Record]) -> None:
        """Handle a batch's requests, each to its committed outcome; a partition whose outcomes could not all be
        committed is read again from its first such request (or from wherever a runner that took it over got)."""
        self._ledger = OffsetLedger((_partition_of(record), record.offset) for record in records)
        ready: list[tuple[Record, Job, JobStatus]] = []
        for record in records:
            await self._settle(record, self._prepare(record, ready))
        await self._run_batch(ready)
        unsettled = self._ledger.unsettled()
        for tp, offset in unsettled.items():
            assert isinstance(tp, TopicPartition)
            if tp in consumer.assignment():  # ours again: read on from the group's offset, wherever its owner left it
                consumer.seek(tp, await _group_offset(consumer, tp, offset))
        if unsettled and not self._lost:
            await asyncio.sleep(1)  # not fenced: Kafka refused even a failure; give it a moment

    async def _settle(self, record: Record, handling: Coroutine[Any, Any, None]) -> None:
        """Run `handling` for one request to its committed outcome, whatever happens short of cancellation."""
        tp = _partition_of(record)
        try:
            await handling
        except (Fenced, PartitionMoved):
            log.warning("fenced: another runner took the partition; the job is theirs now", partition=tp.partition)
            self._lose(tp)
        except Exception:
            log.exception("handling a request failed; failing its job", offset=record.offset)
            try:
                await self._fail_unhandled(record)
            except (Fenced, PartitionMoved):
                self._lose(tp)
            except Exception:
                # Never skipped: a later commit would move the offset past it. Read it again (_settle_batch).
                log.exception("could not fail it either; reading it again", offset=record.offset)

    def _lose(self, tp: TopicPartition) -> None:
        """The partition went to another runner: its jobs still running here stop and commit nothing."""
        self._lost.add(tp)
        for job_id, partition in self._running_jobs.items():
            if partition == tp:
                self.cancels.abandon(job_id)

    async def _prepare(self, record: Record, ready: list[tuple[Record, Job, JobStatus]]) -> None:
        """Settle a request that needs no generation; add one that does to `ready`."""
        # Before reading any state: this fences the partition's earlier owner and aborts what it left open.
        if _partition_of(record) in self._lost:
            raise PartitionMoved(f"partition {record.partition} went to another runner")
        await self.outcomes.claim(record.partition)
        try:
            job = decode(Job, record.value or b"")
        except (ValidationError, ValueError) as exc:
            await self._reject(record, _describe(exc))
            return
        with structlog.contextvars.bound_contextvars(job_id=job.id, track_id=job.track_id):
            status = await self._current_status(job)
            if status.is_terminal:
                log.info("job already finished: its terminal event again", state=status.state, seq=status.seq)
                await self._commit(record, [self._event_write(terminal_event(status))])
                return
            if (refusal := self._refusal(job, record) or self._misrouted(job)) is not None:
                await self._fail(record, status, refusal, dead_letter=True)
                return
            if status.state is JobState.IN_PROGRESS and status.attempt >= self.settings.max_job_attempts:
                await self._fail(record, status, f"crashed the runner {status.attempt} times", dead_letter=True)
                return
            if not self._ours(record):  # it moved while we read its state: not ours to start
                raise PartitionMoved(f"partition {record.partition} went to another runner")
            ready.append((record, job, status))

    async def _run_batch(self, ready: list[tuple[Record, Job, JobStatus]]) -> None:
        """The ready jobs through one pipeline call; each commits its outcome as soon as it ends."""
        if not ready:
            return
        executions = []
        for record, job, status in ready:
            writer = EventWriter(self.producer, self.topics, status, status_interval_s=self.settings.status_interval_s)
            executions.append(JobExecution(
                job, writer, self.generator, self.blobs, self.cancels, self.runner_id, self.settings.job_timeout_s,
                preview_every=self.settings.preview_every, catalog=self.catalog,
                max_job_work=self.settings.max_job_work,
                max_input_image_bytes=self.settings.max_input_image_bytes,
                max_input_image_pixels=self.settings.max_input_image_pixels,
            ))
            self._running_jobs[job.id] = _partition_of(record)
        batch = BatchExecution(executions, self.generator)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(batch.run())
            for (record, _, _), execution in zip(ready, executions, strict=True):
                tasks.create_task(self._settle(record, self._conclude(record, execution, batch)))

    async def _conclude(self, record: Record, execution: JobExecution, batch: BatchExecution) -> None:
        """Once the job ended: commit its outcome."""
        job, writer = execution.job, execution.writer
        with structlog.contextvars.bound_contextvars(job_id=job.id, track_id=job.track_id):
            try:
                await execution.finish(batch.id, len(batch.executions))
                await writer.flush()  # every status before the outcome's: the state topic keeps the last one
            finally:
                self._running_jobs.pop(job.id, None)
                self.cancels.forget_abandoned(job.id)
                await writer.close()
            assert writer.outcome is not None, "a job execution ends with a terminal event"
            event, final = writer.outcome
            hook = _exit_hard if self.settings.fault_after_terminal_status else None
            try:
                await self._commit(record, [self._status_write(final), self._event_write(event)], hook)
            except RecordRejected as exc:
                log.warning("the job's outcome was refused; failing the job", error=str(exc))
                await self._fail(record, writer.before_outcome, "its outcome could not be stored", dead_letter=True)
                return
            log.info("job finished", outcome=event.type, seq=event.seq)

    async def _fail(self, record: Record, status: JobStatus, reason: str, *, dead_letter: bool) -> None:
        """End the job FAILED with `reason` (its request dead-lettered if asked), and commit past it.

        Should Kafka refuse the status, a slimmed one (without the client's parameters) is tried; should
        it refuse that too, the request is committed past anyway: the runner must not stop on it.
        """
        log.warning("job failed", reason=reason)
        event = Event(job_id=status.job_id, seq=status.seq + 1, type=EventType.FAILED, data={"error": reason})
        failed = advance(status, event)
        dead = [Write(self.topics.dead_letters, record.value, record.key, dead_letter_headers(record, reason))]
        tries = [
            [self._status_write(failed), self._event_write(event), *(dead if dead_letter else [])],
            [self._status_write(slimmed(failed)), self._event_write(event), *(dead if dead_letter else [])],
            [self._status_write(slimmed(failed)), self._event_write(event)],
        ]
        for writes in tries:
            try:
                await self._commit(record, writes)
                return
            except RecordRejected as exc:
                log.warning("the job's failure was refused; trying a smaller one", error=str(exc))
        log.error("no failure of this job could be stored; moving past it", offset=record.offset)
        await self._commit(record, [])

    async def _reject(self, record: Record, reason: str) -> None:
        """A message that is not a valid job: dead-letter it and, if it names a job, fail that job."""
        log.warning("invalid job message dead-lettered", reason=reason, offset=record.offset)
        job_id, owner = _identify(record.value or b"")
        status = None if job_id is None else await self._status_of(job_id, owner)
        if status is None or status.is_terminal:
            dead = Write(self.topics.dead_letters, record.value, record.key, dead_letter_headers(record, reason))
            await self._commit(record, [dead])
            return
        await self._fail(record, status, reason, dead_letter=True)

    async def _fail_unhandled(self, record: Record) -> None:
        """After a bug in handling `record`: fail its job, if it names one, and dead-letter it."""
        await self._reject(record, "internal error in the runner")

    async def _status_of(self, job_id: str, owner: str) -> JobStatus:
        await self.view.sync()
        now = time.time()
        return self.view.get(job_id) or JobStatus(
            job_id=job_id, owner=owner, state=JobState.IN_QUEUE, seq=0, updated_at=now, created_at=now
        )

    def _refusal(self, job: Job, record: Record) -> str | None:
        """Why a job may not run for its owner (None: it may). Jobs the API signed were checked by it."""
        allowed = self.settings.kafka_direct_owners
        if not allowed or job.owner in allowed:
            return None
        if signed_by_api(self.settings.job_signing_secret, record.value or b"", dict(record.headers)):
            return None
        return "owner not allowed"

    def _misrouted(self, job: Job) -> str | None:
        """Why a job on this topic is not this runner's to run: it names another configured model (a job written
        straight to Kafka, onto the wrong topic). An unknown model fails later, listing the configured ones."""
        if job.model in self.catalog.models or job.model not in self.models.models:
            return None
        return (
            f"model: {job.model!r} is served from topic {self.models.request_topic(self.topics, job.model)}, "
            f"not {self.request_topic}; write the job there"
        )

    async def _commit(
        self, record: Record, writes: list[Write], before_commit: Callable[[], None] | None = None
    ) -> None:
        """Commit the request's outcome once the group is settled and only while its partition is still ours. The
        group's offset moves past it only as far as its batch allows: never past a request still in hand.

        Raises PartitionMoved (nothing written) when a rebalance gave the partition to another runner.
        """
        tp = _partition_of(record)
        async with self._committing:
            await self._settled.wait()
            if tp in self._lost or not self._ours(record):
                raise PartitionMoved(f"partition {record.partition} went to another runner")
            next_offset = self._ledger.next_offset(tp, record.offset)
            await self.outcomes.commit(record, writes, before_commit, next_offset=next_offset)
            self._ledger.settle(tp, record.offset)

    def _ours(self, record: Record) -> bool:
        return TopicPartition(record.topic, record.partition) in self.consumer.assignment()

    def _status_write(self, status: JobStatus) -> Write:
        return Write(self.topics.state, encode(status), key(status.job_id))

    def _event_write(self, event: Event) -> Write:
        return Write(self.topics.events, encode(event), key(event.job_id))

    async def _revoked(self, revoked: Partitions) -> None:
        """Return at once, so the group is not held up: the running job goes on, but commits nothing until
        the new assignment says whether its partition is still ours (see _on_assigned).

        While a batch runs, this member tells the group it holds only its jobs' partitions: the sticky
        assignment then keeps them here, and only idle partitions move (a runner joining takes no running job).
        """
        self._settled.clear()
        self._revoked_partitions = revoked
        self._lookahead.clear()  # a partition's position goes back to the group's offset: read it again from there
        if self._running:
            self._assignor.member_assignment = sorted({_partition_of(record) for record in self._running})

    async def _on_assigned(self, assigned: Partitions) -> None:
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))
        self._assigned.set()
        note_generation(self.consumer, self._assignor)
        self._lookahead.clear()
        # Where each partition of the batch in hand goes on from: past the batch's last request of it.
        resume = {_partition_of(record): record.offset + 1 for record in sorted(self._running, key=lambda r: r.offset)}
        try:
            for tp, offset in resume.items():
                if tp in assigned:
                    # The group's offset is still before the batch's jobs, and the consumer went back to it.
                    self.consumer.seek(tp, offset)
                else:
                    log.info("rebalance: a running job's partition went to another runner; stopping it here")
                    self._lose(tp)
            gone = self._revoked_partitions - assigned - set(resume)  # a committing job's producer is left to it
            await self.outcomes.release(tp.partition for tp in gone)
        finally:
            self._settled.set()  # whatever failed above, a commit must not wait for ever

    async def _current_status(self, job: Job) -> JobStatus:
        """The job's latest status, including anything an earlier attempt at it wrote.

        A job is only redelivered after its partition moved (a rebalance, a restart), so an earlier
        attempt's writes can only be missing from the view for partitions assigned since the last
        barrier: only then wait for the view to catch up. Otherwise the view is used as it is; a
        job not in it yet has no earlier attempt and starts from IN_QUEUE, seq 0.
        """
        if self._assigned.is_set():
            self._assigned.clear()
            await self.view.sync()
        status = self.view.get(job.id)
        if status is not None and status.is_terminal:
            await self.view.sync()  # before calling it finished: a retry may have requeued it a moment ago
            status = self.view.get(job.id)
        return status or queued_status(job, job.created_at)


class PartitionMoved(Exception):
    """A rebalance gave the partition of the request in hand to another runner: it is theirs to settle."""


async def _group_offset(consumer: AIOKafkaConsumer, tp: TopicPartition, fallback: int) -> int:
    """The group's committed offset for `tp`: before the request if Kafka only timed our transaction out, past it
    if the runner that fenced us finished it meanwhile (reading it again would publish its outcome twice)."""
    try:
        committed = await consumer.committed(tp)
    except KafkaError as exc:
        log.warning("could not read the group's offset; reading the request again", error=repr(exc)[:200])
        return fallback
    return fallback if committed is None else int(committed)


def _partition_of(record: Record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


def _job_in(record: Record) -> Job | None:
    """The job a request holds, for batching; None for one that is not a valid job (it runs alone)."""
    try:
        return decode(Job, record.value or b"")
    except (ValidationError, ValueError):
        return None


def _exit_hard() -> None:
    """The test-only fault hook: die like a crash, between writing the terminal status and committing it."""
    log.warning("fault injection: exiting between the terminal status and its commit")
    sys.stdout.flush()
    os._exit(FAULT_EXIT_CODE)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()[:5]]
        return "invalid job: " + "; ".join(problems)
    return "invalid job: not a JSON object"


def _identify(raw: bytes) -> tuple[str | None, str]:
    """The job id and owner of a message that failed validation, when it has usable ones."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    job_id, owner = data.get("id"), data.get("owner")
    if not isinstance(job_id, str) or not re.match(JOB_ID_PATTERN, job_id):
        return None, ""
    return job_id, owner if isinstance(owner, str) and owner else "unknown"
