"""Orchestration overhead: the bare diffusers call in-process vs submit → COMPLETED through Kafka.

Runs are interleaved (one bare, one full, ...) so both see the same machine, and each full run is
paired with the bare run before it: overhead = full − bare. The full path is what a client sees:
POST /v1/jobs, then GET /v1/jobs/{id}?wait= until COMPLETED, against a real local broker, the API
and a runner as separate processes. Sizes: the tiny model, 256×256, 8 steps.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

from bench.results import report
from contract.job import Job
from easel.local_kafka import LocalKafka
from gpu_runner.pipeline import SDXLGenerator, resolve_model

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".easel"
RUNS = int(os.environ.get("BENCH_RUNS", "100"))
WARMUP = 5
SPEC = {"prompt": "a lighthouse at dusk", "width": 256, "height": 256, "steps": 8, "seed": 11}
KEY = "bench-key"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 2),
        "p99_ms": round(percentile(values, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2),
    }


def start_stack(bootstrap: str, workdir: Path, port: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "EASEL_KAFKA_BOOTSTRAP": bootstrap,
        "EASEL_TOPIC_PREFIX": "bench",
        "EASEL_PORT": str(port),
        "EASEL_HOME": str(HOME),
        "EASEL_BLOB_URL": str(workdir / "blobs"),
        "EASEL_API_KEYS": KEY,
        "EASEL_RUNNER_ID": "bench-runner",
        "EASEL_LOG_LEVEL": "warning",
    }
    log = (workdir / "stack.log").open("ab")
    return [
        subprocess.Popen([sys.executable, "-m", "easel.cli", command], env=env, stdout=log, stderr=log)
        for command in ("api", "runner")
    ]


def full_run(client: httpx.Client, parts: dict[str, list[float]] | None = None) -> float:
    """One job through the whole path; `parts` collects where its time went (same clock on one machine)."""
    started, wall = time.perf_counter(), time.time()
    job_id = client.post("/v1/jobs", json=SPEC).json()["id"]
    submitted = time.time()
    status = client.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
    elapsed, received = time.perf_counter() - started, time.time()
    if status["state"] != "COMPLETED":
        raise RuntimeError(f"job ended {status['state']}: {status.get('error')}")
    if parts is not None:
        parts["submit (POST until Kafka acked)"].append(submitted - wall)
        parts["queue (created until runner started)"].append(status["started_at"] - status["created_at"])
        parts["execution (started until completed event)"].append(status["finished_at"] - status["started_at"])
        parts["notify (completed event until client has it)"].append(received - status["finished_at"])
    return elapsed


def main() -> None:
    model = resolve_model("", HOME)
    generator = SDXLGenerator(model, "cpu")
    job = Job(**SPEC, id="bench", owner="bench")

    def bare_run() -> float:
        started = time.perf_counter()
        generator.generate(job, [job.seed or 0], lambda step, total: None)  # runs on the generator's thread
        return time.perf_counter() - started

    broker = LocalKafka(HOME, port=39092, controller_port=39093)
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    broker.start()
    workdir = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    port = 18123
    processes = start_stack(broker.bootstrap, workdir, port)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {KEY}"}, timeout=90
        ) as client:
            _wait_healthy(client)
            for _ in range(WARMUP):
                bare_run()
                full_run(client)
            bare, full = [], []
            parts: dict[str, list[float]] = defaultdict(list)
            for _ in range(RUNS):
                bare.append(bare_run())
                full.append(full_run(client, parts))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)

    overhead = [f - b for f, b in zip(full, bare, strict=True)]
    result = {
        "benchmark": "orchestration overhead",
        "job": SPEC,
        "runs": RUNS,
        "bare_diffusers": summary(bare),
        "full_path": summary(full),
        "overhead": summary(overhead),
        "full_path_parts": {name: summary(values) for name, values in parts.items()},
        "goal": {"overhead_p50_ms": 15, "overhead_p99_ms": 60},
    }
    report("overhead", result)


def _wait_healthy(client: httpx.Client) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.get("/health").status_code == 200:
                # The runner joins its group on start; one job proves it is consuming.
                full_run(client)
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the stack did not become healthy")


if __name__ == "__main__":
    main()
