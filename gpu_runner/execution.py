"""Running one job: started → progress per step → images in the blob store → one terminal event."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import structlog

from contract.blobs import CONTENT_TYPES, BlobStore, image_key
from contract.catalog import Catalog
from contract.errors import InvalidField
from contract.events import EventType
from contract.infotext import infotext
from contract.job import MAX_SEED, Job, JobSpec, check_work_budget
from gpu_runner.cancellations import CancelWatcher
from gpu_runner.encoding import encode_image
from gpu_runner.pipeline import LatentsCallback, SDXLGenerator
from gpu_runner.previews import preview_event_data, preview_interval, wants_preview
from producers.events import EventWriter

log = structlog.get_logger(__name__)


class JobStopped(Exception):
    """Raised from the step callback to abort generation at once (the VAE decode is skipped too)."""

    def __init__(self, event: EventType, reason: str) -> None:
        super().__init__(reason)
        self.event = event
        self.reason = reason


@dataclass
class JobTimings:
    """Where one attempt's time went inside the runner, in seconds: the pipeline (with the safety checker), PNG or
    JPEG encoding, blob writes, and waiting for Kafka to acknowledge the job's events (the outcome's transaction is
    the runner's, after this). Logged once per job as `job timings`, in ms."""

    pipe: float = 0.0
    encode: float = 0.0
    store: float = 0.0
    publish: float = 0.0

    def log(self, outcome: EventType) -> None:
        ms = {f"{name}_ms": round(seconds * 1000, 2) for name, seconds in vars(self).items()}
        log.info("job timings", outcome=outcome, **ms)


def choose_seeds(job: Job) -> list[int]:
    """A1111's convention: image i uses seed + i; null or -1 draws a random base seed."""
    base = random.randrange(MAX_SEED) if job.random_seed else job.seed
    assert base is not None
    return [(base + i) % (MAX_SEED + 1) for i in range(job.num_images)]


class JobExecution:
    def __init__(
        self,
        job: Job,
        writer: EventWriter,
        generator: SDXLGenerator,
        blobs: BlobStore,
        cancels: CancelWatcher,
        runner_id: str,
        timeout_s: float,
        preview_every: int = 0,
        catalog: Catalog | None = None,
        max_job_work: int = 0,
    ) -> None:
        self.job = job
        self.writer = writer
        self.generator = generator
        self.blobs = blobs
        self.cancels = cancels
        self.runner_id = runner_id
        self.timeout_s = min(timeout_s, job.execution_timeout_s or timeout_s)
        self.preview_every = preview_every
        self.catalog = catalog or Catalog()
        self.max_job_work = max_job_work
        self.timings = JobTimings()

    async def run(self) -> EventType:
        """Emit every event of one attempt at the job; return the terminal event emitted."""
        if (stopped := self._stop_before_start()) is not None:
            self.writer.emit(stopped.event, {"error": stopped.reason})
            return stopped.event
        self.writer.emit(EventType.STARTED, {"runner_id": self.runner_id})
        await self._flush()  # the crash cap counts attempts from STARTED statuses that landed
        outcome = await self._generate()
        await self._flush()  # progress and previews acknowledged before the runner writes the outcome
        self.timings.log(outcome)
        return outcome

    async def _flush(self) -> None:
        started = time.perf_counter()
        await self.writer.flush()
        self.timings.publish += time.perf_counter() - started

    async def _generate(self) -> EventType:
        """From STARTED: generate, encode and store the images; emit the terminal event."""
        job = self.job
        seeds = choose_seeds(job)
        loop = asyncio.get_running_loop()
        started = time.monotonic()

        def on_step(step: int, total: int) -> None:  # runs in the generation thread
            elapsed = time.monotonic() - started
            rate = step / elapsed if elapsed > 0 else 0.0
            progress = {
                "step": step,
                "total": total,
                "fraction": round(step / total, 4),
                "elapsed_s": round(elapsed, 4),
                "eta_s": round((total - step) / rate, 4) if rate else 0.0,
                "it_per_s": round(rate, 3),
            }
            loop.call_soon_threadsafe(self.writer.emit, EventType.PROGRESS, progress)
            if self.cancels.is_cancelled(job.id):
                raise JobStopped(EventType.CANCELLED, "cancelled by request")
            if elapsed > self.timeout_s:
                raise JobStopped(EventType.TIMED_OUT, f"execution exceeded {self.timeout_s:g} s")

        try:
            on_latents = self._previews(loop) if job.preview else None
            encoded = await self.generator.run_in_thread(self._generate_and_encode, seeds, on_step, on_latents)
            stored_at = time.perf_counter()
            outputs = [await self._store(*image) for image in encoded]
            self.timings.store = time.perf_counter() - stored_at
        except JobStopped as stop:
            self.writer.emit(stop.event, {"error": stop.reason})
            return stop.event
        except Exception as exc:
            log.exception("generation failed", job_id=job.id, track_id=job.track_id)
            self.writer.emit(EventType.FAILED, {"error": _short_reason(exc)})
            return EventType.FAILED
        nsfw = [bool(output["nsfw"]) for output in outputs]
        self.writer.emit(EventType.COMPLETED, {"outputs": outputs, "seeds": seeds, "nsfw_content_detected": nsfw})
        return EventType.COMPLETED

    def _stop_before_start(self) -> JobStopped | None:
        job = self.job
        if self.cancels.is_cancelled(job.id):
            return JobStopped(EventType.CANCELLED, "cancelled before it started")
        if job.ttl_s is not None and time.time() - job.created_at > job.ttl_s:
            return JobStopped(EventType.TIMED_OUT, f"waited in the queue longer than its ttl of {job.ttl_s:g} s")
        # The API checked these already; a job written straight to Kafka was not.
        try:
            check_work_budget(job, self.max_job_work)
        except InvalidField as exc:
            return JobStopped(EventType.FAILED, str(exc))
        if (problem := self.catalog.problem(job)) is not None:
            field, rule = problem
            value = getattr(job, field)
            reason = f"{field}: {rule}" if isinstance(value, bool) else f"unknown {field} {value!r}; {rule}"
            return JobStopped(EventType.FAILED, reason)
        return None

    def _previews(self, loop: asyncio.AbstractEventLoop) -> LatentsCallback:
        interval = preview_interval(self.job.steps, self.preview_every)

        def on_latents(step: int, total: int, latents: Any) -> None:  # runs in the generation thread
            if wants_preview(step, total, interval):
                data = preview_event_data(latents, step, total, self.job.width, self.job.height)
                loop.call_soon_threadsafe(self.writer.emit, EventType.PREVIEW, data)

        return on_latents

    def _generate_and_encode(
        self, seeds: list[int], on_step: Any, on_latents: LatentsCallback | None = None
    ) -> list[tuple[dict[str, Any], bytes]]:
        """In the generation thread: the images, encoded, each with its output entry (stored on the loop)."""
        job = self.job
        started = time.perf_counter()
        images = self.generator.generate(job, seeds, on_step, on_latents)
        nsfw = [False] * len(images)
        if job.safety_checker:
            images, nsfw = self.generator.check_safety(images)
        encode_started = time.perf_counter()
        self.timings.pipe = encode_started - started
        spec = job.model_dump(mode="json", include=set(JobSpec.model_fields))
        encoded = []
        for index, (image, seed, flagged) in enumerate(zip(images, seeds, nsfw, strict=True)):
            output = {
                "key": image_key(job.id, index, job.output_format),
                "content_type": CONTENT_TYPES[job.output_format],
                "width": image.width,
                "height": image.height,
                "seed": seed,
                "nsfw": flagged,
            }
            parameters = infotext(spec, seed, self.catalog.model_name)
            encoded.append((output, encode_image(image, job.output_format, parameters)))
        self.timings.encode = time.perf_counter() - encode_started
        return encoded

    async def _store(self, output: dict[str, Any], data: bytes) -> dict[str, Any]:
        await self.blobs.put(output["key"], data, output["content_type"])
        return output


def _short_reason(exc: BaseException) -> str:
    """What a client may see: the kind of failure, never a traceback or a path."""
    if isinstance(exc, (MemoryError,)) or "out of memory" in str(exc).lower():
        return "the runner ran out of memory for this job"
    return f"generation failed ({type(exc).__name__})"
