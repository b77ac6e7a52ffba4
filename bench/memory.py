"""What do finished jobs cost an API instance, with retention off and on, and how long does a restart take?

A broker of its own gets N finished native jobs on its state topic (BENCH_MEMORY_JOBS, default 100,000), each
the status the runner writes for a 1024² job: spec, output, seeds, timings, runner id; 100 keys own them.
Every job finished an hour ago. Then, each in a fresh subprocess that replays the topic into a StateView:
- retention off (EASEL_RETENTION_S of years): every job retained: RSS, bytes per retained job, replay time;
- retention on (60 s): every job past it, before any purger ran: the view keeps only their ids and image
  keys until it tombstones them; RSS and replay time;
- retention on, after a purger tombstoned them all (records and tombstones both still on the topic, as
  before compaction): what a restart costs in steady state.
The first two alternate, two rounds each, so the machine's noise hits both alike. Then the whole API:
`easel api` started to ready on the topic with every job retained, and on an empty one, with its RSS, and
when (seconds after launch) it logged each step of its start (`START_STEPS`); and how long a bare Python
takes to import what `easel api` imports before it connects.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import orjson

from bench.results import report
from consumers.state_view import StateView
from contract.events import Event, EventType
from contract.job import Job
from contract.lifecycle import advance, queued_status
from contract.serialization import encode, key
from contract.settings import Settings
from contract.topics import Topics
from producers import ensure_topics, open_producer
from tests.processes import HOME, EaselProcess, free_port, own_broker, wait_for_health

JOBS = int(os.environ.get("BENCH_MEMORY_JOBS", "100000"))
OWNERS = 100
PREFIX = "bench-memory"
EMPTY_PREFIX = "bench-memory-empty"
RETAINED_S = 10 * 365 * 24 * 3600.0  # retention "off"
RETENTION_ON_S = 60.0
FINISHED_AGO_S = 3600.0
# What the API logs as it starts, in order: the state view's replay ends the first; the stream hub then
# replays EASEL_STREAM_REPLAY_S of the events topic (empty here).
START_STEPS = ("state view ready", "connected to Kafka", "stream hub ready")


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def finished_status(now: float) -> dict[str, Any]:
    """A native job's status as the runner writes it when the job completed, as JSON."""
    job = Job(prompt="a lighthouse at dusk, oil painting, dramatic sky, golden hour", width=1024, height=1024,
              steps=30, id="0" * 32, owner="0" * 16, seed=0)
    status = queued_status(job, now)
    started = Event(job_id=job.id, seq=1, type=EventType.STARTED, ts=now + 0.5, data={"runner_id": "runner-0"})
    output = {"key": f"{job.id}/0.png", "content_type": "image/png", "width": 1024, "height": 1024, "seed": 0}
    completed = Event(job_id=job.id, seq=62, type=EventType.COMPLETED, ts=now + 9.5,
                      data={"outputs": [output], "seeds": [0]})
    fields: dict[str, Any] = orjson.loads(encode(advance(advance(status, started), completed)))
    return fields


def variant(template: dict[str, Any], i: int) -> tuple[bytes, bytes]:
    """Job i: its own id, owner, prompt, seed and times (orjson, not pydantic: 100 k of them in seconds)."""
    job_id = f"{i:032x}"
    seed = (i * 2654435761) % 2**32
    spec = {**template["spec"], "prompt": f"a lighthouse at dusk number {i}, oil painting", "seed": seed}
    outputs = [{**template["outputs"][0], "key": f"{job_id}/0.png", "seed": seed}]
    shift = i * 0.01
    times = {name: template[name] + shift for name in ("created_at", "updated_at", "started_at", "finished_at")}
    status = {**template, **times, "job_id": job_id, "owner": f"{i % OWNERS:016x}", "spec": spec,
              "outputs": outputs, "seeds": [seed]}
    return key(job_id), orjson.dumps(status)


async def fill(settings: Settings, tombstones: bool = False) -> int:
    """Write the N finished jobs (or, with `tombstones`, a tombstone for each) to the state topic; bytes written."""
    await ensure_topics(settings)
    producer = await open_producer(settings, "bench-memory", linger_ms=20, max_batch_bytes=1 << 20)
    topic = Topics(settings.topic_prefix).state
    template = finished_status(time.time() - FINISHED_AGO_S - JOBS * 0.01)
    written = 0
    try:
        acks = []
        for i in range(JOBS):
            record_key, value = variant(template, i)
            payload = None if tombstones else value
            written += len(value)
            acks.append(await producer.send(topic, payload, key=record_key))
            if len(acks) >= 5000:
                await asyncio.gather(*acks)
                acks = []
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return written


async def hold_view(bootstrap: str, prefix: str, retention_s: float) -> dict[str, float]:
    """In a fresh process: replay the state topic into a StateView; RSS before and after, and the replay time."""
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, retention_s=retention_s)
    view = StateView(settings)
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    await view.start()
    replay_s = time.perf_counter() - started
    gc.collect()
    after = rss_bytes()
    due = len(view.due(JOBS + 1))
    held = len(view)
    view.forget(job_id for job_id, _ in view.due(JOBS + 1))  # what a purger's rounds would leave
    gc.collect()
    purged = rss_bytes()
    await view.stop()
    return {"replay_s": replay_s, "rss_before": before, "rss_after": after, "rss_after_purge": purged,
            "held": held, "due": due}


def in_subprocess(bootstrap: str, prefix: str, retention_s: float) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.memory", bootstrap, prefix, str(retention_s)]
    answer = subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).parent.parent)
    measured: dict[str, float] = orjson.loads(answer.stdout.splitlines()[-1])
    return measured


def api_start(bootstrap: str, prefix: str, workdir: Path) -> dict[str, float]:
    """`easel api` from launch to ready (/health 200), its RSS then, how many jobs it says it knows, and when
    it logged each of START_STEPS."""
    port = free_port()
    env = {
        **os.environ, "EASEL_KAFKA_BOOTSTRAP": bootstrap, "EASEL_TOPIC_PREFIX": prefix, "EASEL_PORT": str(port),
        "EASEL_HOME": str(HOME), "EASEL_BLOB_URL": str(workdir / "blobs"), "EASEL_API_KEYS": "bench-key",
        "EASEL_LOG_FORMAT": "json", "EASEL_RETENTION_S": str(RETAINED_S),
    }
    launched_at, started = time.time(), time.perf_counter()
    api = EaselProcess("api", env, workdir / f"api-{prefix}-{port}.log")  # a log of its own: steps read from it
    try:
        wait_for_health(f"http://127.0.0.1:{port}", api, timeout_s=300)
        ready_s = time.perf_counter() - started
        known = httpx.get(f"http://127.0.0.1:{port}/health").json()["jobs_known"]
        steps = logged_at(api.output(), launched_at)
        return {"ready_s": ready_s, "rss": rss_bytes(api.process.pid), "jobs_known": known, **steps}
    finally:
        api.stop()


def imports_s() -> float:
    """A fresh Python importing the API's code and uvicorn, as `easel api` does before it connects."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import uvicorn, service, easel.cli"], check=True,
                   cwd=Path(__file__).parent.parent)
    return time.perf_counter() - started


def logged_at(output: str, launched_at: float) -> dict[str, float]:
    """Seconds from launch to the first JSON log line of each of START_STEPS."""
    seen: dict[str, float] = {}
    for line in output.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:  # uvicorn's own lines are plain text
            continue
        if isinstance(entry, dict) and entry.get("event") in START_STEPS and entry["event"] not in seen:
            at = datetime.fromisoformat(entry["timestamp"]).timestamp()
            seen[entry["event"]] = round(at - launched_at, 2)
    return seen


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


def _summary(runs: list[dict[str, float]]) -> dict[str, object]:
    median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    return {
        "replay_s": [round(run["replay_s"], 2) for run in runs],
        "rss_before_mb": _mb(median["rss_before"]),
        "rss_after_replay_mb": _mb(median["rss_after"]),
        "rss_after_purge_mb": _mb(median["rss_after_purge"]),
        "jobs_held": int(median["held"]),
        "jobs_due": int(median["due"]),
        "bytes_per_job": round((median["rss_after"] - median["rss_before"]) / JOBS),
    }


def _api_summary(empty: list[dict[str, float]], full: list[dict[str, float]]) -> dict[str, object]:
    empty_median, full_median = _medians(empty), _medians(full)
    return {
        "empty_topic_s": [round(run["ready_s"], 2) for run in empty],
        "jobs_retained_s": [round(run["ready_s"], 2) for run in full],
        "rss_empty_mb": _mb(empty_median["rss"]),
        "rss_jobs_retained_mb": _mb(full_median["rss"]),
        "jobs_known": int(full_median["jobs_known"]),
        "bytes_per_retained_job": round((full_median["rss"] - empty_median["rss"]) / JOBS),
        "steps_s_after_launch_empty": _steps(empty_median),
        "steps_s_after_launch_retained": _steps(full_median),
    }


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each measure every run has (a run may miss a log line)."""
    names = set.intersection(*(set(run) for run in runs))
    return {name: statistics.median(run[name] for run in runs) for name in names}


def _steps(median: dict[str, float]) -> dict[str, float]:
    return {step: round(median[step], 2) for step in START_STEPS if step in median}


def main() -> None:
    started = time.perf_counter()
    with own_broker() as broker, TemporaryDirectory() as scratch:
        bootstrap = broker.bootstrap
        settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=PREFIX)
        written = asyncio.run(fill(settings))
        asyncio.run(ensure_topics(Settings(kafka_bootstrap=bootstrap, topic_prefix=EMPTY_PREFIX)))
        off, on = [], []
        for _ in range(2):
            off.append(in_subprocess(bootstrap, PREFIX, RETAINED_S))
            on.append(in_subprocess(bootstrap, PREFIX, RETENTION_ON_S))
        api_empty, api_full = [], []
        for _ in range(2):
            api_empty.append(api_start(bootstrap, EMPTY_PREFIX, Path(scratch)))
            api_full.append(api_start(bootstrap, PREFIX, Path(scratch)))
        imports = [imports_s() for _ in range(2)]
        asyncio.run(fill(settings, tombstones=True))
        purged = [in_subprocess(bootstrap, PREFIX, RETENTION_ON_S)]
    result = {
        "benchmark": "memory of finished jobs, retention off vs on",
        "jobs": JOBS,
        "status_bytes_on_kafka": round(written / JOBS),
        "retention_off": _summary(off),
        "retention_on_all_expired_not_yet_purged": _summary(on),
        "retention_on_all_purged_before_compaction": _summary(purged),
        "api_start_to_ready": _api_summary(api_empty, api_full),
        "api_imports_s": [round(seconds, 2) for seconds in imports],
        "total_s": round(time.perf_counter() - started, 1),
    }
    report("memory", result)


if __name__ == "__main__":
    if len(sys.argv) == 4:  # a measuring subprocess: python -m bench.memory <bootstrap> <prefix> <retention_s>
        _, bootstrap, prefix, retention_s = sys.argv
        print(orjson.dumps(asyncio.run(hold_view(bootstrap, prefix, float(retention_s)))).decode())
    else:
        main()
