"""Webhook throughput: deliveries per second from the dispatcher process to local receivers.

A backlog of finished jobs (request, COMPLETED status and `completed` event each, as a runner
leaves them) is written to Kafka first; then the dispatcher starts, and every receiver counts what
it gets. Two phases, each on its own topic prefix and with a fresh dispatcher:

- `fast`: N fast endpoints;
- `fast+slow`: the same N fast endpoints plus one that takes SLOW_S to answer each delivery.

The fast endpoints' rate in the second phase, against the first, shows whether a slow receiver
holds the others back. Rates run from each endpoint's first delivery to its last.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiokafka import AIOKafkaProducer

from bench.results import report
from consumers.webhooks.schedule import RetrySchedule
from consumers.webhooks.topics import ensure_webhook_topics
from contract.events import Event, EventType
from contract.job import Job, WebhookSpec
from contract.serialization import encode, key
from contract.settings import Settings
from contract.states import JobState, JobStatus, Output
from contract.topics import Topics
from easel.local_kafka import LocalKafka

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".easel"
FAST_ENDPOINTS = int(os.environ.get("BENCH_WEBHOOK_ENDPOINTS", "8"))
PER_ENDPOINT = int(os.environ.get("BENCH_WEBHOOK_PER_ENDPOINT", "1000"))
LOG_LEVEL = os.environ.get("BENCH_WEBHOOK_LOG_LEVEL", "info")
SLOW_DELIVERIES = 200
SLOW_S = 0.5
SECRET = "whsec_" + "YmVuY2gtd2ViaG9vay1zZWNyZXQtMzJieXRlcyEhIQ=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Endpoint:
    name: str
    delay_s: float = 0.0
    times: list[float] = field(default_factory=list)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.times.append(time.monotonic())
        return web.Response(status=204)

    @property
    def rate(self) -> float:
        span = self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0
        return (len(self.times) - 1) / span if span else 0.0


async def start_endpoints(endpoints: list[Endpoint]) -> list[web.AppRunner]:
    runners = []
    for endpoint in endpoints:
        app = web.Application()
        app.router.add_post("/hook", endpoint.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        endpoint.port = runner.addresses[0][1]
        runners.append(runner)
    return runners


async def write_backlog(bootstrap: str, prefix: str, plan: list[tuple[Endpoint, int]]) -> int:
    """Finished jobs, as a runner leaves them, each with a webhook to its endpoint."""
    topics = Topics(prefix)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    total = 0
    try:
        now = time.time()
        # Round-robin over the endpoints, so every one of them has deliveries in flight at once.
        order = [(e, i) for i in range(max(c for _, c in plan)) for e, c in plan if i < c]
        for endpoint, i in order:
            url = f"http://127.0.0.1:{endpoint.port}/hook"
            job_id = f"{endpoint.name}-{i}"
            job = Job(id=job_id, owner="bench", prompt="bench", webhook=WebhookSpec(url=url, track_id=job_id))
            output = Output(key=f"{job_id}/0.png", content_type="image/png", width=64, height=64, seed=1)
            status = JobStatus(
                job_id=job_id, owner="bench", state=JobState.COMPLETED, seq=1, updated_at=now, created_at=now,
                started_at=now, finished_at=now, track_id=job_id, outputs=[output], seeds=[1],
            )
            event = Event(job_id=job_id, seq=1, type=EventType.COMPLETED, ts=now,
                          data={"outputs": [output.model_dump()], "seeds": [1]})
            await producer.send(topics.requests, encode(job), key=key(job_id))
            await producer.send(topics.state, encode(status), key=key(job_id))
            await producer.send(topics.events, encode(event), key=key(job_id))
            total += 1
        await producer.flush()
    finally:
        await producer.stop()
    return total


async def phase(bootstrap: str, workdir: Path, prefix: str, slow: bool) -> dict[str, object]:
    fast = [Endpoint(f"fast{i}") for i in range(FAST_ENDPOINTS)]
    endpoints = [*fast, *([Endpoint("slow", delay_s=SLOW_S)] if slow else [])]
    runners = await start_endpoints(endpoints)
    plan = [(e, SLOW_DELIVERIES if e.delay_s else PER_ENDPOINT) for e in endpoints]
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
    await ensure_webhook_topics(settings, RetrySchedule.from_settings(settings))
    total = await write_backlog(bootstrap, prefix, plan)
    env = {
        **os.environ,
        "EASEL_KAFKA_BOOTSTRAP": bootstrap,
        "EASEL_TOPIC_PREFIX": prefix,
        "EASEL_WEBHOOK_SECRET": SECRET,
        "EASEL_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        # The dispatcher's default level: every attempt is logged, as in production.
        "EASEL_LOG_LEVEL": LOG_LEVEL,
        "EASEL_LOG_FORMAT": "json",
    }
    log = (workdir / f"{prefix}.log").open("ab")
    dispatcher = subprocess.Popen([sys.executable, "-m", "easel.cli", "webhooks"], env=env, stdout=log, stderr=log)
    try:
        async with asyncio.timeout(600):
            while sum(len(e.times) for e in endpoints) < total:
                if dispatcher.poll() is not None:
                    raise RuntimeError(f"the dispatcher exited; see {log.name}")
                await asyncio.sleep(0.1)
    finally:
        dispatcher.terminate()
        dispatcher.wait(30)
        log.close()
        for runner in runners:
            await runner.cleanup()
    first = min(e.times[0] for e in endpoints)
    fast_last = max(e.times[-1] for e in fast)
    fast_count = sum(len(e.times) for e in fast)
    return {
        "endpoints": {e.name: {"deliveries": len(e.times), "per_s": round(e.rate, 1)} for e in endpoints},
        "fast_endpoints_total_per_s": round((fast_count - 1) / (fast_last - first), 1),
        "all_total_per_s": round((total - 1) / (max(e.times[-1] for e in endpoints) - first), 1),
    }


async def run(bootstrap: str, workdir: Path) -> dict[str, object]:
    return {
        "fast": await phase(bootstrap, workdir, "hooks-fast", slow=False),
        "fast+slow": await phase(bootstrap, workdir, "hooks-slow", slow=True),
    }


def main() -> None:
    broker = LocalKafka(HOME, port=free_port(), controller_port=free_port())
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    broker.start()
    workdir = Path(tempfile.mkdtemp(prefix="easel-bench-hooks-"))
    try:
        phases = asyncio.run(run(broker.bootstrap, workdir))
    finally:
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "benchmark": "webhook deliveries",
        "fast_endpoints": FAST_ENDPOINTS,
        "deliveries_per_fast_endpoint": PER_ENDPOINT,
        "slow_endpoint": {"deliveries": SLOW_DELIVERIES, "answers_after_s": SLOW_S},
        "phases": phases,
        "goal": {"deliveries_per_s": 1000, "slow_endpoint_does_not_lower_the_others": True},
    }
    report("webhooks", result)


if __name__ == "__main__":
    main()
