"""Dynamic batching: a burst of compatible jobs through a runner with batching off vs on, alternated.

Two runners on one local broker, each on its own topic prefix: one with EASEL_BATCH_MAX_IMAGES=1 (off), one with
4 (on). Rounds alternate between them (off, on, off, ...) so both see the same machine; the idle one only polls.
Each round writes BURST jobs straight onto the requests topic (no API: the runner is what is measured; keys
spread them over the partitions) and reads the events topic until every job completed. Throughput: jobs over
the time from the burst's first write to its last completion. Latency per job: its completed event's time
minus its creation. Tiny model, 256², 8 steps, each job its own prompt and seed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.overhead import percentile
from bench.results import report
from contract.events import Event, EventType
from contract.serialization import decode
from contract.settings import Settings
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from gpu_runner.pipeline import resolve_model
from producers import ensure_topics

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".easel"
BURST = int(os.environ.get("BENCH_BURST", "32"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))  # per mode
MODES = {"off": 1, "on": 4}  # EASEL_BATCH_MAX_IMAGES
SPEC = {"width": 256, "height": 256, "steps": 8}


class Lane:
    """One runner on its own prefix, and a reader of its events."""

    def __init__(self, name: str, max_images: int, bootstrap: str, workdir: Path) -> None:
        self.name = name
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "EASEL_KAFKA_BOOTSTRAP": bootstrap,
            "EASEL_TOPIC_PREFIX": f"bench-batch-{name}",
            "EASEL_HOME": str(HOME),
            "EASEL_BLOB_URL": str(workdir / name / "blobs"),
            "EASEL_RUNNER_ID": f"bench-{name}",
            "EASEL_LOG_FORMAT": "json",
            "EASEL_BATCH_MAX_IMAGES": str(max_images),
            "EASEL_BATCH_WINDOW_S": "0",
        }
        self.topics = Topics(self.env["EASEL_TOPIC_PREFIX"])
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.events = AIOKafkaConsumer(
            self.topics.events, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            isolation_level="read_committed",
        )

    async def start(self) -> None:
        await ensure_topics(Settings.from_env(self.env))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "easel.cli", "runner"], env=self.env, stdout=log, stderr=log, cwd=REPO
            )
        await self.events.start()
        while "runner ready" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None:
                raise RuntimeError(self.log_path.read_text(errors="replace")[-3000:])
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        await self.events.stop()
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)

    async def burst(self, producer: AIOKafkaProducer, jobs: int) -> tuple[float, list[float]]:
        """`jobs` jobs at once; (seconds until the last completed, each job's latency in seconds)."""
        created: dict[str, float] = {}
        started = time.time()
        for i in range(jobs):
            job_id = f"{self.name}-{uuid.uuid4().hex[:10]}"
            created[job_id] = time.time()
            job = {"id": job_id, "owner": "bench", "prompt": f"a lighthouse at dusk, take {i}", "seed": i,
                   "created_at": created[job_id], **SPEC}
            await producer.send(self.topics.requests, orjson.dumps(job), key=job_id.encode())
        await producer.flush()
        completed: dict[str, float] = {}
        while len(completed) < jobs:
            for records in (await self.events.getmany(timeout_ms=500)).values():
                for record in records:
                    event = decode(Event, record.value or b"")
                    if event.job_id in created and event.type.is_terminal:
                        if event.type is not EventType.COMPLETED:
                            raise RuntimeError(f"{event.job_id} ended {event.type}: {event.data}")
                        completed[event.job_id] = event.ts
        return max(completed.values()) - started, [completed[job_id] - created[job_id] for job_id in created]


def latencies(values: list[float]) -> dict[str, float]:
    return {f"p{q}_ms": round(percentile(values, q) * 1000, 1) for q in (50, 90, 99)}


def main() -> None:
    resolve_model("", HOME)  # built once, before two runners would race to build it
    broker = LocalKafka(HOME, port=39192, controller_port=39193)
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    broker.start()  # outside any event loop: it runs its own
    workdir = Path(tempfile.mkdtemp(prefix="easel-bench-batching-"))
    try:
        seconds, latency = asyncio.run(measure(broker.bootstrap, workdir))
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rate = {name: BURST * len(runs) / sum(runs) for name, runs in seconds.items()}
    report("batching", {
        "burst": BURST,
        "rounds_per_mode": ROUNDS,
        "job": SPEC,
        "batch_max_images": MODES,
        "jobs_per_s": {name: round(value, 2) for name, value in rate.items()},
        "speedup": round(rate["on"] / rate["off"], 3),
        "goal": 1.3,
        "latency": {name: latencies(values) for name, values in latency.items()},
        "round_s": {name: [round(s, 2) for s in runs] for name, runs in seconds.items()},
    })


async def measure(bootstrap: str, workdir: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per mode: each round's seconds, and every job's latency."""
    lanes = {name: Lane(name, max_images, bootstrap, workdir) for name, max_images in MODES.items()}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    seconds: dict[str, list[float]] = {name: [] for name in lanes}
    latency: dict[str, list[float]] = {name: [] for name in lanes}
    try:
        await producer.start()
        for lane in lanes.values():
            await lane.start()
            await lane.burst(producer, 8)  # warm-up: first jobs, first batches
        for _ in range(ROUNDS):
            for name, lane in lanes.items():
                took, each = await lane.burst(producer, BURST)
                seconds[name].append(took)
                latency[name].extend(each)
    finally:
        await producer.stop()
        for lane in lanes.values():
            await lane.stop()
    return seconds, latency


if __name__ == "__main__":
    main()
