"""Easel beside its inline peer: the same job four ways, interleaved in one run.

- bare: `SDXLGenerator.generate` + PNG encode, in this process (no HTTP, no queue);
- peer: runpod-python's local API server (`/runsync`) with an inline handler that runs the same pipeline and answers
  a base64 PNG (bench/peer_worker.py), in a subprocess;
- runsync: Easel's RunPod `/v2/{id}/runsync` in the A1111-worker shape (base64 back), through a real stack: a
  local broker, `easel api` and `easel runner` as processes;
- native: Easel's `POST /v1/jobs`, `GET /v1/jobs/{id}?wait=`, then the image.

Every process runs torch on one thread (OMP_NUM_THREADS=1; here, `torch.set_num_threads(1)` on the generator's
thread): on this 2-core machine the API, the broker and the client need the other core (bench/torch_threads.py).
Each round runs the four in a rotated order; overheads are paired within a round. Easel's runner logs where each
job's time went (`job timings`: pipe, encode, store, publish) and `job finished` after the outcome's transaction:
those lines, the job's status times and the client's clock attribute the time. Tiny model, 256², 8 steps.
Run: `.venv/bin/python -m bench.peer` (BENCH_RUNS rounds, default 60).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.overhead import percentile
from bench.results import report
from contract.job import Job
from easel.local_kafka import LocalKafka
from gpu_runner.pipeline import SDXLGenerator, resolve_model

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".easel"
RUNS = int(os.environ.get("BENCH_RUNS", "60"))
WARMUP = 5
TORCH_THREADS = 1
PROMPT = "a lighthouse at dusk"
SPEC = {"prompt": PROMPT, "width": 256, "height": 256, "steps": 8, "seed": 11, "guidance": 7.0, "sampler": "Euler"}
# The same job in the A1111 worker's shape.
RUNSYNC_BODY = {
    "input": {
        "api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"},
        "payload": {"prompt": PROMPT, "width": 256, "height": 256, "steps": 8, "seed": 11, "cfg_scale": 7.0,
                    "sampler_name": "Euler"},
    }
}
KEY = "bench-key"
PATHS = ("bare", "peer", "runsync", "native")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(values: list[float]) -> dict[str, float]:
    """Seconds in, ms out."""
    return {f"p{q}_ms": round(percentile(values, q) * 1000, 1) for q in (50, 90, 99)}


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines() if line.startswith("{")]


def log_time(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"]).timestamp()


class Stack:
    """A broker, `easel api` and `easel runner`, each on one torch thread; the runner logs at info (its timings)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker = LocalKafka(HOME, port=free_port(), controller_port=free_port())
        self.port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def runner_log(self) -> Path:
        return self.workdir / "runner.log"

    def start(self) -> None:
        shutil.rmtree(self.broker.data_dir, ignore_errors=True)
        self.broker.start()
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(TORCH_THREADS),
            "HF_HUB_OFFLINE": "1",
            "EASEL_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "EASEL_TOPIC_PREFIX": "peer-bench",
            "EASEL_PORT": str(self.port),
            "EASEL_HOME": str(HOME),
            "EASEL_BLOB_URL": str(self.workdir / "blobs"),
            "EASEL_API_KEYS": KEY,
            "EASEL_RUNNER_ID": "bench-runner",
            "EASEL_LOG_FORMAT": "json",
        }
        for command, level in (("api", "warning"), ("runner", "info")):
            log = (self.workdir / f"{command}.log").open("ab")
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "easel.cli", command], env={**env, "EASEL_LOG_LEVEL": level},
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            ))
        _wait_for(lambda: "runner ready" in self.runner_log.read_text(errors="replace"), "the runner")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(30)
        self.broker.stop()
        shutil.rmtree(self.broker.data_dir, ignore_errors=True)


def start_peer(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    log = (workdir / "peer.log").open("ab")
    command = [sys.executable, "-m", "bench.peer_worker", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
               "--rp_api_port", str(port), "--rp_log_level", "ERROR"]
    env = {**os.environ, "OMP_NUM_THREADS": str(TORCH_THREADS), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


class Paths:
    """One run of each path: its wall time in seconds; Easel's job ids and when the client had the answer."""

    def __init__(self, generator: SDXLGenerator, client: httpx.Client, easel: str, peer: str) -> None:
        self.generator = generator
        self.client = client
        self.easel_url = easel
        self.peer_url = peer
        self.job = Job(**SPEC, id="bench", owner="bench")
        self.bare_parts: dict[str, list[float]] = defaultdict(list)
        # job id → (the path, the client's wall time when it had the whole answer, the job's queue time)
        self.received: dict[str, tuple[str, float, float]] = {}

    def run(self, path: str) -> float:
        started = time.perf_counter()
        getattr(self, path)()
        return time.perf_counter() - started

    def bare(self) -> None:
        started = time.perf_counter()
        [image] = self.generator.generate(self.job, [11], lambda step, total: None)
        encoded = time.perf_counter()
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # as the peer's handler encodes
        self.bare_parts["pipe"].append(encoded - started)
        self.bare_parts["encode (Pillow default, level 6)"].append(time.perf_counter() - encoded)

    def peer(self) -> None:
        answer = self.client.post(f"{self.peer_url}/runsync", json={"input": SPEC}).json()
        _check_png(answer, _base64_images(answer))

    def runsync(self) -> None:
        answer = self.client.post(f"{self.easel_url}/v2/bench/runsync", json=RUNSYNC_BODY).json()
        _check_png(answer, _base64_images(answer))
        self.received[answer["id"]] = ("runsync", time.time(), answer["delayTime"] / 1000)

    def native(self) -> None:
        job_id = self.client.post(f"{self.easel_url}/v1/jobs", json=SPEC).json()["id"]
        status = self.client.get(f"{self.easel_url}/v1/jobs/{job_id}", params={"wait": 60}).json()
        if status["state"] != "COMPLETED":
            raise RuntimeError(f"native job ended {status['state']}: {status.get('error')}")
        image = self.client.get(f"{self.easel_url}/v1/jobs/{job_id}/images/0")
        _check_png(status, [image.content])
        self.received[job_id] = ("native", time.time(), status["started_at"] - status["created_at"])


def _check_png(answer: dict[str, Any], images: list[bytes]) -> None:
    """`answer`: a RunPod envelope (`status`) or a native status (`state`)."""
    completed = answer.get("status", answer.get("state")) == "COMPLETED"
    if not completed or len(images) != 1 or not images[0].startswith(b"\x89PNG"):
        raise RuntimeError(f"not one PNG: {str(answer)[:300]}")


def _base64_images(answer: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(image) for image in answer.get("output", {}).get("images", [])]


def easel_parts(
    runner_log: Path, received: dict[str, tuple[str, float, float]]
) -> dict[str, dict[str, list[float]]]:
    """Per path, where Easel's jobs spent their time inside the runner, and after it, in seconds."""
    timings: dict[str, dict[str, Any]] = {}
    finished: dict[str, float] = {}
    for line in log_lines(runner_log):
        if line.get("event") == "job timings":
            timings[line["job_id"]] = line
        elif line.get("event") == "job finished":
            finished[line["job_id"]] = log_time(line)
    parts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for job_id, (path, received_at, queued) in received.items():
        line = timings[job_id]
        parts[path]["queue (created → runner started it)"].append(queued)
        for field in ("pipe", "encode", "store", "publish"):
            parts[path][f"runner: {field}"].append(line[f"{field}_ms"] / 1000)
        parts[path]["runner: outcome transaction (timings line → job finished)"].append(
            finished[job_id] - log_time(line)
        )
        parts[path]["after the outcome (job finished → client has the answer)"].append(received_at - finished[job_id])
    return parts


def main() -> None:
    generator = SDXLGenerator(resolve_model("", HOME), "cpu")
    generator.call(torch.set_num_threads, TORCH_THREADS)
    workdir = Path(tempfile.mkdtemp(prefix="easel-peer-bench-"))
    stack = Stack(workdir)
    peer_port = free_port()
    peer_process = start_peer(workdir, peer_port)
    times: dict[str, list[float]] = defaultdict(list)
    try:
        stack.start()
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=90) as client:
            paths = Paths(generator, client, f"http://127.0.0.1:{stack.port}", f"http://127.0.0.1:{peer_port}")
            # The peer has no /health: its docs page answers once it serves.
            _wait_for(lambda: _answers(client, f"{paths.peer_url}/"), "the peer")
            _wait_for(lambda: _answers(client, f"{paths.easel_url}/health"), "the API")
            for _ in range(WARMUP):
                for path in PATHS:
                    paths.run(path)
            paths.received.clear()
            paths.bare_parts.clear()
            for round_ in range(RUNS):
                shift = round_ % len(PATHS)  # rotated, so no path always follows another
                for path in PATHS[shift:] + PATHS[:shift]:
                    times[path].append(paths.run(path))
        parts = easel_parts(stack.runner_log, paths.received)
    finally:
        peer_process.terminate()
        peer_process.wait(30)
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def paired(path: str, baseline: str) -> dict[str, float]:
        return summary([a - b for a, b in zip(times[path], times[baseline], strict=True)])

    report("peer", {
        "benchmark": "Easel beside the inline runpod-python peer",
        "job": SPEC,
        "rounds": RUNS,
        "torch_threads_per_process": TORCH_THREADS,
        "wall": {path: summary(times[path]) for path in PATHS},
        "overhead_vs_bare": {path: paired(path, "bare") for path in PATHS[1:]},
        "overhead_vs_peer": {path: paired(path, "peer") for path in ("runsync", "native")},
        "bare_parts": {name: summary(values) for name, values in paths.bare_parts.items()},
        "easel_parts": {path: {name: summary(v) for name, v in named.items()} for path, named in parts.items()},
        "goal": {"runsync_vs_peer_p50_ms": 15, "runsync_vs_peer_p99_ms": 60},
    })


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.TransportError:
        return False


def _wait_for(ready: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not start")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
