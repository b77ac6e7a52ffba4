"""What does writing a job's outcome in one Kafka transaction cost, next to the plain writes it replaced?

Per job, the runner writes the terminal status and event and moves its group past the request. Before
(at-least-once): two idempotent sends, acknowledged, then a consumer offset commit. Now (exactly once,
gpu_runner/outcomes.py): begin, the two sends, send_offsets_to_transaction, commit. Both paths run against
one local broker, interleaved pair by pair, so the machine's noise hits both alike; the ratio is the result.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.results import report
from contract.settings import Settings
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from producers import ensure_topics, open_producer

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".easel"
PAIRS = int(os.environ.get("BENCH_OUTCOME_PAIRS", "50"))
PREFIX = "bench-outcomes"
STATUS = b'{"job_id": "j", "state": "COMPLETED"}' + b" " * 1500  # about a finished job's status
EVENT = b'{"job_id": "j", "type": "completed"}' + b" " * 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure(bootstrap: str) -> dict[str, object]:
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=PREFIX)
    topics = Topics(PREFIX)
    await ensure_topics(settings)
    group = topics.runner_group
    request = TopicPartition(topics.requests, 0)
    plain = await open_producer(settings, "bench-plain")
    transactional = await open_producer(settings, "bench-txn", transactional_id=f"{PREFIX}.runner.p0")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    consumer.assign([request])

    async def at_least_once(offset: int) -> None:
        acks = [await plain.send(topics.state, STATUS, key=b"j"), await plain.send(topics.events, EVENT, key=b"j")]
        await asyncio.gather(*acks)
        await consumer.commit({request: offset})

    async def exactly_once(offset: int) -> None:
        await transactional.begin_transaction()
        acks = [
            await transactional.send(topics.state, STATUS, key=b"j"),
            await transactional.send(topics.events, EVENT, key=b"j"),
        ]
        await asyncio.gather(*acks)
        await transactional.send_offsets_to_transaction({request: offset}, group)
        await transactional.commit_transaction()

    async def timed(path: Callable[[int], Awaitable[None]], offset: int) -> float:
        started = time.perf_counter()
        await path(offset)
        return time.perf_counter() - started

    try:
        for offset in range(5):  # warm-up: connections, coordinators
            await timed(at_least_once, offset)
            await timed(exactly_once, offset)
        plain_s, txn_s = [], []
        for offset in range(5, 5 + PAIRS):
            plain_s.append(await timed(at_least_once, offset))
            txn_s.append(await timed(exactly_once, offset))
    finally:
        await consumer.stop()
        await plain.stop()
        await transactional.stop()
    plain_p50, txn_p50 = statistics.median(plain_s), statistics.median(txn_s)
    return {
        "benchmark": "outcome write per job: transaction vs plain writes + commit",
        "pairs": PAIRS,
        "plain_ms": _ms(plain_s),
        "transaction_ms": _ms(txn_s),
        "extra_per_job_p50_ms": round((txn_p50 - plain_p50) * 1000, 2),
        "ratio_p50": round(txn_p50 / plain_p50, 2),
    }


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


def main() -> None:
    broker = LocalKafka(HOME, port=free_port(), controller_port=free_port())
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    broker.start()
    try:
        result = asyncio.run(measure(broker.bootstrap))
    finally:
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)
    report("outcomes", result)


if __name__ == "__main__":
    main()
