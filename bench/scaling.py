"""Does a second runner in the group raise throughput? A burst of jobs through 1 runner, then through 2.

One local broker, 4 request partitions, the tiny model at 64×64 with a few steps. Each configuration has
its own topic prefix and its runners stay up throughout; rounds alternate between them, so the machine's
noise (and other work on it) hits both alike. A round: N jobs written straight to the requests topic at
once, timed until each has its terminal event on the events topic (read_committed). The result is jobs/s
per configuration and the ratio, per round and as the median.

The same pair runs again with one torch thread per runner (OMP_NUM_THREADS=1): by default each runner's
torch uses every core, so two runners on a small CPU box oversubscribe the same cores.

Run: `.venv/bin/python -m bench.scaling` (BENCH_SCALING_ROUNDS, BENCH_SCALING_JOBS).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.results import report
from contract.events import Event
from contract.serialization import decode
from contract.topics import Topics
from tests.processes import HOME, EaselProcess, make_stack, own_broker

ROUNDS = int(os.environ.get("BENCH_SCALING_ROUNDS", "3"))
JOBS = int(os.environ.get("BENCH_SCALING_JOBS", "16"))
PARTITIONS = 4
SPEC = {"owner": "bench", "prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 4, "seed": 1}


@dataclass
class Configuration:
    name: str
    runners: int
    baseline: str = ""  # the configuration this one's ratio is taken against
    env: dict[str, str] = field(default_factory=dict)
    processes: list[EaselProcess] = field(default_factory=list)
    prefix: str = ""


ONE_THREAD = {"OMP_NUM_THREADS": "1"}
CONFIGURATIONS = [
    Configuration("one_runner", 1),
    Configuration("two_runners", 2, "one_runner"),
    Configuration("one_runner_one_thread", 1, env=ONE_THREAD),
    Configuration("two_runners_one_thread_each", 2, "one_runner_one_thread", ONE_THREAD),
]


def last_assignment(runner: EaselProcess) -> list[int]:
    lines = [line for line in runner.output().splitlines() if '"partitions assigned"' in line]
    return list(json.loads(lines[-1])["partitions"]) if lines else []


def start(config: Configuration, bootstrap: str, workdir: Path) -> None:
    """The configuration's runners, ready and holding every partition between them."""
    stack = make_stack(bootstrap, workdir / config.name, f"bench-scaling-{config.name}", HOME)
    config.prefix = stack.prefix
    env = {**stack.env, "EASEL_REQUEST_PARTITIONS": str(PARTITIONS), "EASEL_PREVIEW_EVERY": "0", **config.env}
    for index in range(config.runners):
        runner_id = f"{config.name}-{index}"
        config.processes.append(
            EaselProcess("runner", {**env, "EASEL_RUNNER_ID": runner_id}, stack.workdir / f"{runner_id}.log")
        )
    for runner in config.processes:
        runner.wait_for_output("runner ready", timeout_s=180)
    deadline = time.monotonic() + 120
    while True:
        held = [last_assignment(runner) for runner in config.processes]
        if all(held) and sum(map(len, held)) == PARTITIONS:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{config.name}: the runners never shared the partitions: {held}")
        time.sleep(0.2)


async def burst(bootstrap: str, config: Configuration, name: str, jobs: int) -> float:
    """Jobs per second for `jobs` jobs written at once, until every one has its terminal event."""
    topics = Topics(config.prefix)
    # No group: every partition of the events topic, from its end.
    events = AIOKafkaConsumer(
        topics.events, bootstrap_servers=bootstrap, isolation_level="read_committed", auto_offset_reset="latest"
    )
    await events.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        while not events.assignment():
            await events.getmany(timeout_ms=100)
        for tp in events.assignment():
            await events.position(tp)  # resolved now: nothing of this burst is missed
        ids = [f"{name}-{i}" for i in range(jobs)]
        started = time.perf_counter()
        acks = [
            await producer.send(topics.requests, orjson.dumps({**SPEC, "id": job_id}), key=job_id.encode())
            for job_id in ids
        ]
        await asyncio.gather(*acks)
        ended: set[str] = set()
        while len(ended) < jobs:
            for records in (await events.getmany(timeout_ms=200)).values():
                for record in records:
                    event = decode(Event, record.value or b"")
                    if event.type.is_terminal and event.job_id in ids:
                        ended.add(event.job_id)
            if time.perf_counter() - started > 600:
                raise TimeoutError(f"{config.name}: {len(ended)} of {jobs} jobs ended")
        return jobs / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await events.stop()


async def measure(bootstrap: str) -> dict[str, object]:
    for config in CONFIGURATIONS:  # warm-up: the model's first runs, connections, coordinators
        await burst(bootstrap, config, "warmup", PARTITIONS * 2)
    rates: dict[str, list[float]] = {config.name: [] for config in CONFIGURATIONS}
    for round_index in range(ROUNDS):
        for config in CONFIGURATIONS:
            rates[config.name].append(await burst(bootstrap, config, f"round-{round_index}", JOBS))
    ratios = {
        f"{config.name}/{config.baseline}": [
            round(rate / one, 3) for rate, one in zip(rates[config.name], rates[config.baseline], strict=True)
        ]
        for config in CONFIGURATIONS
        if config.baseline
    }
    return {
        "jobs_per_burst": JOBS,
        "rounds": ROUNDS,
        "request_partitions": PARTITIONS,
        "job": {key: SPEC[key] for key in ("width", "height", "steps")},
        "cpu_cores": os.cpu_count(),
        "jobs_per_s": {name: [round(r, 3) for r in values] for name, values in rates.items()},
        "jobs_per_s_median": {name: round(statistics.median(values), 3) for name, values in rates.items()},
        "ratios": ratios,
        "ratios_median": {name: round(statistics.median(values), 3) for name, values in ratios.items()},
    }


def main() -> None:
    with own_broker() as broker, TemporaryDirectory() as scratch:
        try:
            for config in CONFIGURATIONS:
                start(config, broker.bootstrap, Path(scratch))
            result = asyncio.run(measure(broker.bootstrap))
        finally:
            for config in CONFIGURATIONS:
                for runner in config.processes:
                    runner.stop()
    report("scaling", result)


if __name__ == "__main__":
    main()
