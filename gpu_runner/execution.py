"""Running a batch of jobs, each on its own: started → progress per step → images in the blob store → one
terminal event. A job stopped mid-batch ends at once; the others go on."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from PIL import Image

from contract.blobs import CONTENT_TYPES, BlobStore, image_key
from contract.catalog import Catalog
from contract.errors import ClientError, InvalidField
from contract.events import EventType
from contract.infotext import infotext
from contract.job import MAX_SEED, Job, JobSpec, check_work_budget, denoising_steps
from contract.settings import Settings
from gpu_runner.cancellations import CancelWatcher
from gpu_runner.encoding import encode_image
from gpu_runner.input_images import InputImages, read_input_images
from gpu_runner.pipeline import BatchItem, LatentsCallback, SDXLGenerator, StepCallback
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
    """Where one attempt's time went inside the runner, in seconds: the pipeline (its batch's call, with the job's
    safety check), PNG or JPEG encoding, blob writes, and waiting for Kafka to acknowledge the job's events (the
    outcome's transaction is the runner's, after this). Logged once per job as `job timings`, in ms, with the
    batch it ran in (`batch_id`, `batch_jobs`: how many jobs shared the pipeline call)."""

    pipe: float = 0.0
    encode: float = 0.0
    store: float = 0.0
    publish: float = 0.0

    def log(self, outcome: EventType, **context: object) -> None:
        """`context`: what else places the job (its batch)."""
        ms = {f"{name}_ms": round(seconds * 1000, 2) for name, seconds in vars(self).items()}
        log.info("job timings", outcome=outcome, **ms, **context)


def choose_seeds(job: Job) -> list[int]:
    """A1111's convention: image i uses seed + i; null or -1 draws a random base seed."""
    base = random.randrange(MAX_SEED) if job.random_seed else job.seed
    assert base is not None
    return [(base + i) % (MAX_SEED + 1) for i in range(job.num_images)]


class JobExecution:
    """One job's part in a batch: its checks before it starts, its events, images, timings and terminal event.

    `ended` resolves with the terminal event once it is emitted: a job stopped mid-batch ends at once, while
    the batch goes on (its images are made with the others, then dropped).
    """

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
        max_input_image_bytes: int = Settings.max_input_image_bytes,
        max_input_image_pixels: int = Settings.max_input_image_pixels,
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
        self.max_input_image_bytes = max_input_image_bytes
        self.max_input_image_pixels = max_input_image_pixels
        self.inputs = InputImages()  # read in `begin`
        self.timings = JobTimings()
        self.ended: asyncio.Future[EventType] = asyncio.get_running_loop().create_future()
        self.seeds: list[int] = []
        # Set on the generation thread when the job must stop; from then on it only rides along.
        self.stopped: JobStopped | None = None
        self._started = 0.0
        self._latents: Any = None  # its images' denoised estimate at the latest step (A1111's last_latent)
        # A job a client stopped (A1111 /interrupt, any cancel) ends with what it had: that estimate, decoded.
        self._partial: list[tuple[dict[str, Any], bytes]] = []
        self._ending: asyncio.Task[None] | None = None

    async def begin(self) -> bool:
        """Emit STARTED, or end the job before it starts; whether it goes on to generate."""
        if (stopped := self._stop_before_start() or await self._read_inputs()) is not None:
            self._end(stopped.event, {"error": stopped.reason})
            return False
        self.writer.emit(EventType.STARTED, {"runner_id": self.runner_id})
        await self._flush()  # the crash cap counts attempts from STARTED statuses that landed
        self.seeds = choose_seeds(self.job)
        return True

    def batch_item(self, loop: asyncio.AbstractEventLoop) -> BatchItem:
        """Its share of the batch's pipeline call."""
        return BatchItem(self.job, self.seeds, self.latents_callback(loop), self.inputs.init, self.inputs.mask)

    async def finish(self, batch_id: str, batch_jobs: int) -> EventType:
        """Wait for the job's end; return its terminal event once everything before it is acknowledged."""
        outcome = await self.ended
        await self._flush()  # progress and previews acknowledged before the runner writes the outcome
        self.timings.log(outcome, batch_id=batch_id, batch_jobs=batch_jobs)
        return outcome

    def on_step(self, step: int, total: int, started: float, loop: asyncio.AbstractEventLoop) -> None:
        """In the generation thread, after each step of the batch: progress, then whether the job must stop."""
        if self.stopped is not None:
            return
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
        if self.cancels.is_cancelled(self.job.id):
            self.stopped = JobStopped(EventType.CANCELLED, "cancelled by request")
            if self.cancels.requested(self.job.id):
                self._partial = self._partial_images()
        elif elapsed > self.timeout_s:
            self.stopped = JobStopped(EventType.TIMED_OUT, f"execution exceeded {self.timeout_s:g} s")
        if self.stopped is not None:
            loop.call_soon_threadsafe(self.end_stopped)

    def end_stopped(self) -> None:
        """On the loop: end a job that was told to stop (once), with its partial images if it has some."""
        if self.stopped is None or self.ended.done() or self._ending is not None:
            return
        if self._partial:
            self._ending = asyncio.create_task(self._end_with_partial(self.stopped))
        else:
            self._end(self.stopped.event, {"error": self.stopped.reason})

    async def stopping(self) -> None:
        """Until a stopped job has ended (storing its partial images first)."""
        if self._ending is not None:
            await self._ending

    def _partial_images(self) -> list[tuple[dict[str, Any], bytes]]:
        """In the generation thread, as the job stops: its latest latents decoded and encoded (A1111 answers an
        interrupted txt2img with them). Nothing when that fails: the job still ends, without images."""
        if self._latents is None:
            return []
        try:
            return self.encode(self.generator.decode(self._latents))
        except Exception:
            log.exception("decoding an interrupted job's images failed", job_id=self.job.id, track_id=self.job.track_id)
            return []

    async def _end_with_partial(self, stopped: JobStopped) -> None:
        data: dict[str, Any] = {"error": stopped.reason}
        try:
            data |= {"outputs": [await self._store(*image) for image in self._partial], "seeds": self.seeds}
        except Exception:
            log.exception("storing an interrupted job's images failed", job_id=self.job.id, track_id=self.job.track_id)
        self._end(stopped.event, data)

    def fail(self, exc: BaseException) -> None:
        if not self.ended.done():
            log.error("generation failed", job_id=self.job.id, track_id=self.job.track_id, error=repr(exc)[:300])
        self._end(EventType.FAILED, {"error": _short_reason(exc)})

    def latents_callback(self, loop: asyncio.AbstractEventLoop) -> LatentsCallback:
        """Its own images' denoised estimate (x0) at each step: kept (for a partial image) and previewed if it asked.

        Both show the predicted clean image, not the noisy latents, as A1111 does (its previews and the
        `last_latent` an interrupted job returns); where the scheduler predicts no x0 they are the latents.
        """
        interval = preview_interval(denoising_steps(self.job.steps, self.job.strength), self.preview_every)

        def on_latents(step: int, total: int, latents: Any, denoised: Any) -> None:  # runs in the generation thread
            if self.stopped is None:
                self._latents = denoised  # a reference: the pipeline and scheduler make new tensors each step
            if self.job.preview and self.stopped is None and wants_preview(step, total, interval):
                data = preview_event_data(
                    denoised, step, total, self.job.width, self.job.height, self.generator.preview_decoder
                )
                loop.call_soon_threadsafe(self.writer.emit, EventType.PREVIEW, data)

        return on_latents

    def encode(self, images: list[Image.Image]) -> list[tuple[dict[str, Any], bytes]]:
        """In the generation thread: the job's images, safety-checked if asked, encoded, each with its output."""
        job = self.job
        nsfw = [False] * len(images)
        if job.safety_checker:
            checked_at = time.perf_counter()
            images, nsfw = self.generator.check_safety(images)
            self.timings.pipe += time.perf_counter() - checked_at
        encode_started = time.perf_counter()
        spec = job.model_dump(mode="json", include=set(JobSpec.model_fields))
        encoded = []
        for index, (image, seed, flagged) in enumerate(zip(images, self.seeds, nsfw, strict=True)):
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

    async def complete(self, encoded: list[tuple[dict[str, Any], bytes]]) -> None:
        """Store the images and end the job COMPLETED (FAILED if the blob store fails)."""
        try:
            stored_at = time.perf_counter()
            outputs = [await self._store(*image) for image in encoded]
            self.timings.store = time.perf_counter() - stored_at
        except Exception as exc:
            log.exception("storing the images failed", job_id=self.job.id, track_id=self.job.track_id)
            self.fail(exc)
            return
        nsfw = [bool(output["nsfw"]) for output in outputs]
        self._end(EventType.COMPLETED, {"outputs": outputs, "seeds": self.seeds, "nsfw_content_detected": nsfw})

    def _end(self, event: EventType, data: dict[str, Any]) -> None:
        if not self.ended.done():
            self.writer.emit(event, data)
            self.ended.set_result(event)

    async def _flush(self) -> None:
        started = time.perf_counter()
        await self.writer.flush()
        self.timings.publish += time.perf_counter() - started

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
            # A name (model, refiner) is quoted; the other rules (safety checker, LoRAs) name what they refuse.
            reason = f"unknown {field} {value!r}; {rule}" if isinstance(value, str) else f"{field}: {rule}"
            return JobStopped(EventType.FAILED, reason)
        return None

    async def _read_inputs(self) -> JobStopped | None:
        """Its init image and mask, read and fitted (`self.inputs`); what ends the job when one cannot be used."""
        try:
            self.inputs = await read_input_images(
                self.job, self.blobs, max_bytes=self.max_input_image_bytes, max_pixels=self.max_input_image_pixels
            )
        except InvalidField as exc:
            return JobStopped(EventType.FAILED, str(exc))
        except Exception:  # the blob store failed: this job fails, the runner goes on
            log.exception("reading a job's input images failed", job_id=self.job.id, track_id=self.job.track_id)
            return JobStopped(EventType.FAILED, "init_image: the stored input images could not be read")
        return None

    async def _store(self, output: dict[str, Any], data: bytes) -> dict[str, Any]:
        await self.blobs.put(output["key"], data, output["content_type"])
        return output


class BatchExecution:
    """Jobs of one batch (gpu_runner/batching.py) through one pipeline call: each started, generated, stored and
    ended on its own; `run` returns once every one has ended."""

    def __init__(self, executions: list[JobExecution], generator: SDXLGenerator) -> None:
        self.executions = executions
        self.generator = generator
        self.id = uuid.uuid4().hex[:12]

    async def run(self) -> None:
        try:
            live = [execution for execution in self.executions if await execution.begin()]
            if live:
                await self._generate(live)
                for execution in live:
                    await execution.stopping()  # a stopped job storing its partial images ends after that
        except Exception as exc:  # a bug: whatever has not ended fails, the runner goes on
            log.exception("running a batch failed", batch_id=self.id)
            for execution in self.executions:
                execution.fail(exc)
        finally:
            for execution in self.executions:
                execution.ended.cancel()  # only ones not ended (the runner is stopping): nobody waits for ever

    async def _generate(self, live: list[JobExecution]) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()

        def on_step(step: int, total: int) -> None:  # runs in the generation thread
            for execution in live:
                execution.on_step(step, total, started, loop)
            if all(execution.stopped is not None for execution in live):
                raise JobStopped(EventType.CANCELLED, "every job of the batch stopped")  # no decode either

        items = [execution.batch_item(loop) for execution in live]
        try:
            encoded = await self.generator.run_in_thread(self._generate_and_encode, items, on_step, live)
        except JobStopped:
            for execution in live:
                execution.end_stopped()
            return
        except Exception as exc:
            log.exception("generation failed", batch_id=self.id, jobs=[execution.job.id for execution in live])
            for execution in live:
                execution.fail(exc)
            return
        for execution, images in zip(live, encoded, strict=True):
            if images is None:
                execution.end_stopped()
            else:
                await execution.complete(images)

    def _generate_and_encode(
        self, items: list[BatchItem], on_step: StepCallback, live: list[JobExecution]
    ) -> list[list[tuple[dict[str, Any], bytes]] | None]:
        """In the generation thread: each job's encoded images; None for a job that stopped (its images dropped)."""
        started = time.perf_counter()
        images = self.generator.generate_batch(items, on_step)
        pipe = time.perf_counter() - started
        encoded: list[list[tuple[dict[str, Any], bytes]] | None] = []
        for execution, job_images in zip(live, images, strict=True):
            execution.timings.pipe = pipe
            encoded.append(None if execution.stopped is not None else execution.encode(job_images))
        return encoded


def _short_reason(exc: BaseException) -> str:
    """What a client may see: the kind of failure, never a traceback or a path."""
    if isinstance(exc, (MemoryError,)) or "out of memory" in str(exc).lower():
        return "the runner ran out of memory for this job"
    if isinstance(exc, ClientError):  # worded for clients (an unknown or broken LoRA: `loras: ...`)
        return exc.message
    return f"generation failed ({type(exc).__name__})"
