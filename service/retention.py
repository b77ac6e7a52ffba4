"""Retention: a finished job lives EASEL_RETENTION_S, then it is purged everywhere.

Each API instance runs one purger. Every min(60 s, retention / 4) it takes the jobs its state view holds
past retention, deletes their images (and the input images the API stored for img2img), writes their
tombstones to the compacted state topic (every view drops them, a restart never loads them, and compaction
removes their keys for good), then drops them from its own view. Images go first: a round that fails
halfway (Kafka or the blob store away) leaves the jobs due, and the next round finishes them. Every step
is idempotent, so instances purging the same job at once only write two tombstones and delete missing
images, which is no error.

Until a purger reaches a job it is already gone for clients: the view answers None past retention, so
every dialect answers its not-found.
"""

from __future__ import annotations

import asyncio

import structlog

from contract.blobs import input_image_key
from contract.errors import KafkaUnavailable
from contract.serialization import key
from producers import Background
from producers.publish import WRITE_DEADLINE_S, deadline, enqueue
from service.input_images import IMAGE_ROLES
from service.state import AppState

log = structlog.get_logger(__name__)
MAX_INTERVAL_S = 60.0
BATCH = 500  # jobs per blob deletion and tombstone flush: a restart with a long backlog purges in steps


def input_image_keys(job_id: str) -> tuple[str, ...]:
    """Where the API may have stored the job's input images (img2img, inpainting); none stored is no error.

    From the job's id, not its spec's `init_image`: the API stores a job's inputs under its own id only, and a
    job written straight to Kafka may name another job's key, which must not go with it.
    """
    return tuple(input_image_key(job_id, role) for role in IMAGE_ROLES.values())


def purge_interval_s(retention_s: float) -> float:
    """How often a purger looks: often enough that a job outlives its retention by at most a quarter of it."""
    return min(MAX_INTERVAL_S, retention_s / 4)


async def purge_due(app: AppState) -> int:
    """Purge every job this instance's view holds past retention; how many it purged.

    Raises QueueError when Kafka did not take the tombstones (the jobs stay due), or the blob store's error.
    """
    kafka = app.kafka
    view, producer = kafka.view, kafka.producer
    if producer is None:
        raise KafkaUnavailable("not connected to Kafka yet")
    await view.sync()  # decide on the latest statuses: a job retried a moment ago is not due
    purged = 0
    while batch := view.due(BATCH):
        await app.blobs.delete(blob for job_id, blobs in batch for blob in (*blobs, *input_image_keys(job_id)))
        async with deadline(WRITE_DEADLINE_S, "retention tombstones"):
            acks = [await enqueue(producer, kafka.topics.state, None, key(job_id)) for job_id, _ in batch]
            await asyncio.gather(*acks)
        view.forget(job_id for job_id, _ in batch)
        purged += len(batch)
    if purged:
        log.info("jobs purged after retention", jobs=purged, jobs_known=len(view))
    return purged


class RetentionPurger:
    """`purge_due` in the background, every `purge_interval_s`, for as long as the API runs."""

    def __init__(self, app: AppState) -> None:
        self._app = app
        self._background = Background("retention purger")

    def start(self) -> None:
        self._background.spawn(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    async def _run(self) -> None:
        interval_s = purge_interval_s(self._app.settings.retention_s)
        while True:
            await asyncio.sleep(interval_s)
            if not self._app.kafka.ready:
                continue
            try:
                await purge_due(self._app)
            except Exception as exc:  # Kafka or the blob store failed this round: the jobs stay due for the next
                log.warning("retention purge postponed", error=repr(exc)[:200])
