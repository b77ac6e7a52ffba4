"""The runner process: consume job requests in a group, run each, write its outcome, then commit.

At-least-once: the offset is committed only after the terminal event and status are acknowledged.
A job redelivered after a crash resumes its seq from the state view; one that already ended is
skipped, so each job has exactly one visible outcome. Generation runs in a worker thread, so the
consumer keeps heartbeating through long jobs.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time

import orjson
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from consumers.kafka import Partitions, Rebalance, commit, group_consumer
from consumers.state_view import StateView
from contract.blobs import BlobStore
from contract.catalog import Catalog
from contract.events import EventType
from contract.job import JOB_ID_PATTERN, Job
from contract.lifecycle import queued_status
from contract.serialization import decode
from contract.settings import Settings
from contract.states import JobState, JobStatus
from contract.topics import Topics
from gpu_runner.cancellations import CancelWatcher
from gpu_runner.execution import JobExecution
from gpu_runner.pipeline import SDXLGenerator
from producers import ensure_topics, open_producer, send_dead_letter
from producers.events import EventWriter

log = structlog.get_logger(__name__)


class Runner:
    def __init__(self, settings: Settings, generator: SDXLGenerator) -> None:
        self.settings = settings
        self.generator = generator
        self.topics = Topics(settings.topic_prefix)
        self.runner_id = settings.runner_id or f"{socket.gethostname()}-{id(self):x}"
        self.blobs = BlobStore(settings.blob_dir)
        self.view = StateView(settings)
        self.cancels = CancelWatcher(settings)
        self.catalog = Catalog.from_settings(settings)
        # Set when partitions are (re)assigned: their jobs may carry an earlier attempt's writes.
        self._assigned = asyncio.Event()
        # The partition of the job being run (None between jobs), and "no job running".
        self._running: TopicPartition | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self) -> None:
        await ensure_topics(self.settings)
        producer = await open_producer(self.settings, f"easel-runner-{self.runner_id}")
        consumer = group_consumer(
            self.settings,
            [self.topics.requests],
            group_id=self.topics.runner_group,
            client_id=f"easel-runner-{self.runner_id}",
            instance_id=self.settings.runner_id,
            rebalance=Rebalance(on_revoked=self._revoked, on_assigned=self._on_assigned),
            # A job may take up to its timeout between two polls; a rebalance waits as long for it (see _revoked).
            work_timeout_s=self.settings.job_timeout_s,
            max_poll_records=1,
        )
        try:
            await self.view.start()
            await self.cancels.start()
            await consumer.start()
            log.info("runner ready", runner_id=self.runner_id, device=self.generator.device)
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=1)
                for tp, records in batches.items():
                    for record in records:
                        self._running = tp
                        self._idle.clear()
                        try:
                            await self.handle(producer, record)
                            # If a rebalance made this fail, the job is redelivered and then skipped as finished.
                            await commit(consumer, {tp: record.offset + 1})
                        finally:
                            self._running = None
                            self._idle.set()
        finally:
            await consumer.stop()
            await self.cancels.stop()
            await self.view.stop()
            await producer.stop()

    async def handle(self, producer: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            job = decode(Job, record.value or b"")
        except (ValidationError, ValueError) as exc:
            await self._reject(producer, record, exc)
            return
        with structlog.contextvars.bound_contextvars(job_id=job.id, track_id=job.track_id):
            status = await self._current_status(job)
            if status.is_terminal:
                log.info("job already finished, skipping redelivery", state=status.state)
                return
            writer = EventWriter(producer, self.topics, status)
            try:
                execution = JobExecution(
                    job, writer, self.generator, self.blobs, self.cancels, self.runner_id, self.settings.job_timeout_s,
                    preview_every=self.settings.preview_every, catalog=self.catalog,
                )
                outcome = await execution.run()
                await writer.flush()
            finally:
                await writer.close()
            log.info("job finished", outcome=outcome, seq=writer.status.seq)

    async def _revoked(self, revoked: Partitions) -> None:
        """Keep a partition until its running job is finished and committed.

        Without this, a runner joining the group would be handed the partition of a job still running
        here and start it again. No lock is shared with the consume loop: we only wait for its event.
        """
        if self._running in revoked:
            log.info("rebalance: finishing the running job before giving its partition up")
            await self._idle.wait()

    async def _on_assigned(self, assigned: Partitions) -> None:
        self._assigned.set()

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
            await self.view.sync()  # before skipping it: a retry may have requeued it a moment ago
            status = self.view.get(job.id)
        return status or queued_status(job, job.created_at)

    async def _reject(self, producer: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        """A message that is not a valid job: dead-letter it and, if it names a job, fail that job."""
        reason = _describe(exc)
        log.warning("invalid job message dead-lettered", reason=reason, offset=record.offset)
        await send_dead_letter(producer, self.topics, record, reason)
        job_id, owner = _identify(record.value or b"")
        if job_id is None:
            return
        await self.view.sync()
        current = self.view.get(job_id)
        if current is not None and current.is_terminal:
            return
        now = time.time()
        status = current or JobStatus(
            job_id=job_id, owner=owner, state=JobState.IN_QUEUE, seq=0, updated_at=now, created_at=now
        )
        writer = EventWriter(producer, self.topics, status)  # status before event, as for every job
        try:
            writer.emit(EventType.FAILED, {"error": reason})
            await writer.flush()
        finally:
            await writer.close()


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
