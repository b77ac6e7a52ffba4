"""Stream fan-out: 1,000 concurrent WebSocket subscribers, latency from a runner's step to the client.

A real broker and a real API process (its stream hub, uvicorn's websockets). A stand-in runner
process writes the jobs' events with the real `EventWriter`, as `JobExecution` does, stamping each
progress event with the time its step callback fired; the subscribers (one process, one asyncio
loop) take `receipt − step` for every progress event they get. Subscribers are spread over many
jobs (4 each) plus a crowd of `HOT` on one job. No GPU work: this measures the path, on 2 cores
shared by the broker, the API, the stand-in runner and all the clients.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from bench.results import report
from contract.events import EventType
from contract.keys import key_id
from contract.serialization import encode, key
from contract.settings import Settings
from contract.states import JobState, JobStatus
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from producers import open_producer
from producers.events import EventWriter
from producers.publish import publish

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".easel"
SUBSCRIBERS = int(os.environ.get("BENCH_SUBSCRIBERS", "1000"))
HOT = 200  # subscribers on the one popular job
PER_JOB = 4  # the others, four to a job
STEPS = 20
STEPS_PER_S = 10.0  # per job: an SDXL step on a fast GPU
CONCURRENT_JOBS = 20  # a fleet of 20 runners
KEY = "bench-key"
PREFIX = "bench-streams"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    jobs_count = 1 + (SUBSCRIBERS - HOT) // PER_JOB
    broker = LocalKafka(HOME, port=39192, controller_port=39193)
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    broker.start()
    workdir = Path(tempfile.mkdtemp(prefix="easel-bench-streams-"))
    port = 18124
    api = _start_api(broker.bootstrap, workdir, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url)
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
            statuses = [
                client.post("/v1/jobs", json={"prompt": f"bench {n}", "steps": STEPS}).json() for n in range(jobs_count)
            ]
        job_ids = [s["id"] for s in statuses]
        targets = [job_ids[0]] * HOT + [job_ids[1 + n // PER_JOB] for n in range(SUBSCRIBERS - HOT)]
        result = asyncio.run(_measure(base_url, broker.bootstrap, targets, statuses))
    finally:
        api.terminate()
        api.wait(30)
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    result |= {
        "subscribers": SUBSCRIBERS,
        "jobs": jobs_count,
        "hot_job_subscribers": HOT,
        "steps_per_job": STEPS,
        "steps_per_s_per_job": STEPS_PER_S,
        "concurrent_jobs": CONCURRENT_JOBS,
        "goal": {"p99_ms": 100},
    }
    report("streams", result)


async def _measure(base_url: str, bootstrap: str, targets: list[str], statuses: list[dict[str, Any]]) -> dict[str, Any]:
    latencies: list[float] = []
    gaps = 0
    connected = asyncio.Semaphore(100)  # open the connections 100 at a time
    ready = [asyncio.Event() for _ in targets]

    async def subscriber(index: int, job_id: str) -> None:
        nonlocal gaps
        url = "ws" + base_url.removeprefix("http") + f"/v1/jobs/{job_id}/stream"
        async with connected:
            ws = await connect(
                url, additional_headers={"Authorization": f"Bearer {KEY}"}, open_timeout=60, ping_interval=None
            )
        async with ws:
            last = -1
            async for raw in ws:
                received = time.time()
                event = orjson.loads(raw)
                gaps += event["seq"] - last - 1
                last = event["seq"]
                if event["type"] == "queued":
                    ready[index].set()
                elif event["type"] == "progress":
                    latencies.append(received - event["data"]["bench_step_ts"])

    started = time.perf_counter()
    tasks = [asyncio.create_task(subscriber(i, job_id)) for i, job_id in enumerate(targets)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 300)
    connect_s = time.perf_counter() - started
    runner = multiprocessing.get_context("spawn").Process(target=_stand_in_runner, args=(bootstrap, statuses))
    emit_started = time.perf_counter()
    runner.start()
    await asyncio.wait_for(asyncio.gather(*tasks), 600)
    runner.join(30)
    return {
        "connect_all_s": round(connect_s, 2),
        "run_s": round(time.perf_counter() - emit_started, 2),
        "progress_events_received": len(latencies),
        "coalesced_or_missing": gaps,
        "latency_ms": {
            "p50": round(percentile(latencies, 50) * 1000, 2),
            "p99": round(percentile(latencies, 99) * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
        },
    }


def _stand_in_runner(bootstrap: str, statuses: list[dict[str, Any]]) -> None:
    asyncio.run(_emit(bootstrap, statuses))


async def _emit(bootstrap: str, statuses: list[dict[str, Any]]) -> None:
    """What `JobExecution` writes for each job, CONCURRENT_JOBS at a time, STEPS_PER_S steps a second each."""
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=PREFIX)
    producer = await open_producer(settings, "bench-stand-in-runner")
    topics = Topics(PREFIX)
    slots = asyncio.Semaphore(CONCURRENT_JOBS)
    owner = key_id(KEY)

    async def run(body: dict[str, Any]) -> None:
        async with slots:
            status = JobStatus(
                job_id=body["id"],
                owner=owner,
                state=JobState.IN_QUEUE,
                seq=0,
                updated_at=time.time(),
                created_at=body["created_at"],
            )
            writer = EventWriter(producer, topics, status)
            writer.emit(EventType.STARTED, {"runner_id": "bench"})
            began = time.monotonic()
            for step in range(1, STEPS + 1):
                await asyncio.sleep(began + step / STEPS_PER_S - time.monotonic())
                elapsed = time.monotonic() - began
                writer.emit(
                    EventType.PROGRESS,
                    {
                        "step": step,
                        "total": STEPS,
                        "fraction": step / STEPS,
                        "elapsed_s": elapsed,
                        "eta_s": (STEPS - step) / STEPS_PER_S,
                        "it_per_s": step / elapsed,
                        "bench_step_ts": time.time(),  # the step callback's moment
                    },
                )
            writer.emit(EventType.COMPLETED, {"outputs": [], "seeds": []})
            await writer.flush()
            await writer.close()
            # The runner writes the outcome in one transaction with the request's offset; this stand-in reads no
            # request, so it writes the pair plainly, in the same order: status, then event.
            assert writer.outcome is not None
            event, final = writer.outcome
            await publish(producer, topics.state, encode(final), key(final.job_id), what="the status")
            await publish(producer, topics.events, encode(event), key(event.job_id), what="the event")

    try:
        await asyncio.gather(*(run(body) for body in statuses))
    finally:
        await producer.stop()


def _start_api(bootstrap: str, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EASEL_KAFKA_BOOTSTRAP": bootstrap,
        "EASEL_TOPIC_PREFIX": PREFIX,
        "EASEL_PORT": str(port),
        "EASEL_HOME": str(HOME),
        "EASEL_BLOB_URL": str(workdir / "blobs"),
        "EASEL_API_KEYS": KEY,
        "EASEL_LOG_LEVEL": "warning",
    }
    log = (workdir / "api.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "easel.cli", "api"], env=env, stdout=log, stderr=log)


def _wait_healthy(base_url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the API did not become healthy")


if __name__ == "__main__":
    main()
