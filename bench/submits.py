"""Submits per second: `POST /v1/jobs` (202 once Kafka acknowledged) beside `GET /health` on the same server.

A broker of its own and `easel api` processes, no runner (jobs stay queued). For 16 and 64 connections, rounds
alternate a fixed number of submits and of health checks, so both see the same machine; the queue limit is on
but set high, so its check runs on every submit and never refuses. aiohttp drives the load (httpx's async client
tops out near 200 requests/s here).

Each load also notes the CPU time it cost the API (with its workers), the broker and this client (aiohttp), per
request: what a submit costs the whole machine, and so what rate its cores allow.

Servers compared in the same run: one API process, `easel api --workers N` (BENCH_WORKERS, 0 to skip), and,
with BENCH_SUBMITS_BASELINE=<a checkout of another commit>, one API process from that checkout.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.results import report
from easel.local_kafka import LocalKafka

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".easel"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "3000"))  # per round, per connection count
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
BASELINE = os.environ.get("BENCH_SUBMITS_BASELINE", "")
CONNECTIONS = (16, 64)
QUEUE_LIMIT = 100  # the default EASEL_MAX_QUEUED_PER_KEY
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PER_KEY = QUEUE_LIMIT // 2  # submits per key: the limit is checked on every submit and never refuses
JOB = {"prompt": "a lighthouse at dusk", "width": 256, "height": 256, "steps": 8}


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_api(
    name: str, bootstrap: str, workdir: Path, port: int, checkout: Path, args: tuple[str, ...], keys: list[str]
) -> Server:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "EASEL_KAFKA_BOOTSTRAP": bootstrap,
        "EASEL_TOPIC_PREFIX": "bench-submits",
        "EASEL_PORT": str(port),
        "EASEL_HOME": str(HOME),
        "EASEL_BLOB_URL": str(workdir / "blobs"),
        "EASEL_API_KEYS": ",".join(keys),
        "EASEL_LOG_LEVEL": "warning",
        "EASEL_MAX_QUEUED_PER_KEY": str(QUEUE_LIMIT),
    }
    log = (workdir / f"{name}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "easel.cli", "api", *args], env=env, cwd=checkout, stdout=log, stderr=log
    )
    return Server(name, port, process)


class Keys:
    """API keys handed out `PER_KEY` submits each, so no key's queue nears its limit (no runner drains them)."""

    def __init__(self, submits: int) -> None:
        self.all = [f"bench-submits-{n}" for n in range(submits // PER_KEY + 1)]
        self._handed = 0

    def next(self) -> dict[str, str]:
        key = self.all[self._handed // PER_KEY]
        self._handed += 1
        return {"Authorization": f"Bearer {key}"}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process and its children (uvicorn's workers) have used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()  # from the state on: utime and stime are the 12th, 13th
    used = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return used + sum(cpu_s(int(child)) for child in children.read().split())


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def load(
    session: aiohttp.ClientSession, method: str, url: str, connections: int, keys: Keys
) -> tuple[float, list[float]]:
    """`REQUESTS` requests over `connections` concurrent clients: the wall time and each request's latency."""
    latencies: list[float] = []
    remaining = REQUESTS
    expected = 202 if method == "POST" else 200

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            body, headers = (JOB, keys.next()) if method == "POST" else (None, None)
            async with session.request(method, url, json=body, headers=headers) as response:
                await response.read()
                if response.status != expected:
                    raise RuntimeError(f"{method} {url}: {response.status} {await response.text()}")
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    return time.perf_counter() - started, latencies


async def wait_healthy(session: aiohttp.ClientSession, server: Server) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited ({server.process.returncode})")
        try:
            async with session.get(f"{server.url}/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{server.name} did not become healthy")


async def measure(servers: list[Server], keys: Keys, broker_pid: int) -> dict[str, object]:
    walls: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    latencies: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    # CPU seconds per request, by (server, route, connections) and process
    cpu: dict[tuple[str, str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    connector = aiohttp.TCPConnector(limit=max(CONNECTIONS))
    async with aiohttp.ClientSession(connector=connector) as session:
        for server in servers:
            await wait_healthy(session, server)
            await load(session, "POST", f"{server.url}/v1/jobs", 16, keys)  # warm-up
        for _ in range(ROUNDS):
            for connections in CONNECTIONS:
                for server in servers:
                    for route, method, path in (("submit", "POST", "/v1/jobs"), ("health", "GET", "/health")):
                        pids = {"api": server.process.pid, "broker": broker_pid}
                        before = {name: cpu_s(pid) for name, pid in pids.items()} | {"client": own_cpu_s()}
                        wall, times = await load(session, method, server.url + path, connections, keys)
                        after = {name: cpu_s(pid) for name, pid in pids.items()} | {"client": own_cpu_s()}
                        for name in after:
                            cpu[server.name, route, connections][name].append((after[name] - before[name]) / REQUESTS)
                        walls[server.name, route, connections].append(wall)
                        latencies[server.name, route, connections].extend(times)
    result: dict[str, object] = {}
    for (name, route, connections), times in latencies.items():
        rates = [REQUESTS / wall for wall in walls[name, route, connections]]
        result[f"{name} {route} @{connections}"] = {
            "requests_per_s": round(statistics.median(rates)),
            "requests_per_s_range": [round(min(rates)), round(max(rates))],
            "p50_ms": round(percentile(times, 50) * 1000, 2),
            "p99_ms": round(percentile(times, 99) * 1000, 2),
            "cpu_ms_per_request": {
                process: round(statistics.median(per_request) * 1000, 3)
                for process, per_request in cpu[name, route, connections].items()
            },
        }
    return result


def main() -> None:
    broker = LocalKafka(HOME, port=39192, controller_port=39193)
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    broker.start()
    workdir = Path(tempfile.mkdtemp(prefix="easel-bench-submits-"))
    variants: list[tuple[str, Path, tuple[str, ...]]] = [("api", REPO, ())]
    if WORKERS > 1:
        variants.append((f"api --workers {WORKERS}", REPO, ("--workers", str(WORKERS))))
    if BASELINE:
        variants.append(("baseline", Path(BASELINE), ()))
    keys = Keys(len(variants) * REQUESTS * (1 + ROUNDS * len(CONNECTIONS)))
    servers = [
        start_api(name, broker.bootstrap, workdir, 18231 + n, checkout, args, keys.all)
        for n, (name, checkout, args) in enumerate(variants)
    ]
    try:
        assert broker.process is not None
        result = asyncio.run(measure(servers, keys, broker.process.pid))
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            server.process.wait(30)
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    report("submits", {
        "benchmark": "submits/s beside /health, one broker, no runner",
        "machine_cores": os.cpu_count(),
        "rounds": ROUNDS,
        "requests_per_round": REQUESTS,
        "job": JOB,
        "goal": {"submits_per_s_at_64": 3000, "p99_ms": 50},
        **result,
    })


if __name__ == "__main__":
    main()
