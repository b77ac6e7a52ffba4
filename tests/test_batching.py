"""Dynamic batching in a real runner: compatible waiting jobs share one pipeline call, each keeping its own images,
events, previews, cancel and outcome; incompatible ones do not; the group's offsets end past every job.

Jobs are on the requests topic before the runner starts, so they are waiting when it takes its first one. Which
batch a job ran in is in the runner's `job timings` line (`batch_id`, `batch_jobs`).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from PIL import Image

from contract.blobs import open_blob_store
from contract.control import ControlCommand
from contract.events import Event, EventType
from contract.job import Job
from contract.serialization import encode
from contract.settings import Settings
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from gpu_runner.pipeline import SDXLGenerator
from producers import ensure_topics
from tests.kafka_io import Records, events_of, produce, read_topic
from tests.processes import HOME, EaselProcess, Stack, make_stack
from tests.test_runner_fairness import produce_to

# A window long enough for a loaded test box: the batch need not depend on how the first fetches fell.
BATCH_ENV = {"EASEL_BATCH_MAX_IMAGES": "4", "EASEL_BATCH_WINDOW_S": "1"}


@pytest.fixture
def runnerless_stack(kafka: LocalKafka, tiny_model: str, tmp_path: Path) -> Iterator[Stack]:
    stack = make_stack(kafka.bootstrap, tmp_path, f"batch-{uuid.uuid4().hex[:6]}", HOME)
    stack.env.update(BATCH_ENV)
    try:
        yield stack
    finally:
        stack.stop()


def job(job_id: str, **changes: object) -> dict[str, object]:
    return {"id": job_id, "owner": "tester", "prompt": f"a picture of {job_id}", "width": 64, "height": 64,
            "steps": 3, "seed": 1, **changes}


def terminal_events(records: Records, job_ids: list[str]) -> dict[str, Event]:
    ends = {}
    for job_id in job_ids:
        ends.update({e.job_id: e for e in events_of(records, job_id) if e.type.is_terminal})
    return ends


async def run_until_ended(stack: Stack, job_ids: list[str]) -> Records:
    """The events topic once every job ended."""
    topic = Topics(stack.prefix).events
    return await read_topic(
        stack.env["EASEL_KAFKA_BOOTSTRAP"], topic, lambda rs: len(terminal_events(rs, job_ids)) == len(job_ids),
        timeout_s=180, linger_s=1.0,
    )


def timings(runner: EaselProcess, after: int = 0) -> dict[str, dict[str, object]]:
    """Each job's `job timings` line in the runner's log (from character `after` on)."""
    lines = (json.loads(line) for line in runner.output()[after:].splitlines() if line.startswith("{"))
    return {str(line["job_id"]): line for line in lines if line.get("event") == "job timings"}


def batches(runner: EaselProcess) -> set[frozenset[str]]:
    """The jobs that ran together, batch by batch."""
    groups: dict[str, set[str]] = {}
    lines = timings(runner)
    for job_id, line in lines.items():
        groups.setdefault(str(line["batch_id"]), set()).add(job_id)
    for group in groups.values():
        assert {lines[job_id]["batch_jobs"] for job_id in group} == {len(group)}, group
    return {frozenset(group) for group in groups.values()}


async def committed_offsets(stack: Stack) -> dict[int, int]:
    """The runners' group's committed offsets on the requests topic, per partition."""
    topics = Topics(stack.prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.env["EASEL_KAFKA_BOOTSTRAP"])
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(topics.runner_group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == topics.requests}


async def images_of(stack: Stack, event: Event) -> list[Image.Image]:
    blobs = open_blob_store(Settings.from_env(stack.env))
    try:
        stored = [await blobs.get(output["key"]) for output in event.data["outputs"]]
        return [Image.open(io.BytesIO(data)) for data in stored if data is not None]
    finally:
        await blobs.close()


def pixels_apart(a: Image.Image, b: Image.Image) -> int:
    return max(abs(x - y) for x, y in zip(a.convert("RGB").tobytes(), b.tobytes(), strict=True))


@pytest.mark.slow
async def test_compatible_jobs_run_as_one_batch_each_as_if_alone(runnerless_stack: Stack, tiny_model: str) -> None:
    stack = runnerless_stack
    await ensure_topics(Settings.from_env(stack.env))
    burst = {
        "two": job("two", num_images=2, seed=10, negative_prompt="blurry"),
        "other-key": job("other-key", seed=20),
        "three": job("three", seed=30),
    }
    incompatible = [job("wide-1", width=96), job("wide-2", width=96), job("long-1", steps=4), job("long-2", steps=4)]
    # The burst fills a batch of 4 images across two partitions; behind it on partition 0, two pairs of jobs of
    # their own kinds.
    await produce_to(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).requests, [
        (0, burst["two"]), (1, burst["other-key"]), (0, burst["three"]), *((0, j) for j in incompatible),
    ])
    runner = stack.start_runner()
    job_ids = [*burst, *(str(j["id"]) for j in incompatible)]
    records = await run_until_ended(stack, job_ids)

    ends = terminal_events(records, job_ids)
    assert {e.type for e in ends.values()} == {EventType.COMPLETED}, ends
    assert batches(runner) == {frozenset(burst), frozenset({"long-1", "long-2"}), frozenset({"wide-1", "wide-2"})}
    for job_id in burst:  # each its own progress, one per step, once
        progress = [e.data["step"] for e in events_of(records, job_id) if e.type is EventType.PROGRESS]
        assert progress == [1, 2, 3], (job_id, progress)

    # Each job's images: what the job gives run alone, seed + i for its i-th image (close: see test_batching_units).
    generator = SDXLGenerator(tiny_model, "cpu")
    for job_id, spec in burst.items():
        stored = await images_of(stack, ends[job_id])
        assert ends[job_id].data["seeds"] == [int(str(spec["seed"])) + i for i in range(len(stored))]
        alone = generator.generate(Job.model_validate(spec), ends[job_id].data["seeds"], lambda step, total: None)
        assert [pixels_apart(s, a) <= 3 for s, a in zip(stored, alone, strict=True)] == [True] * len(alone)

    # Every job's offset committed: a runner starting again on the group runs none of them again.
    assert await committed_offsets(stack) == {0: 6, 1: 1}  # past every request produced
    runner.stop()
    restarted_at = len(runner.output())
    again = stack.start_runner()  # the same id: it takes its partitions back at once
    again.wait_for_output("runner ready", after=restarted_at)
    await produce_to(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).requests, [(0, job("after"))])
    await run_until_ended(stack, ["after"])
    assert set(timings(again, after=restarted_at)) == {"after"}


@pytest.mark.slow
async def test_a_job_cancelled_mid_batch_ends_at_once_and_the_others_complete(runnerless_stack: Stack) -> None:
    stack = runnerless_stack
    bootstrap, topics = stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix)
    await ensure_topics(Settings.from_env(stack.env))
    names = {"keep-1": 1, "cancel": 2, "keep-2": 3}
    specs = [job(name, steps=40, seed=seed, preview=True) for name, seed in names.items()]
    await produce_to(bootstrap, topics.requests, [(0, spec) for spec in specs])
    runner = stack.start_runner()

    def cancel_running(records: Records) -> bool:
        return any(e.type is EventType.PROGRESS and e.data["step"] >= 2 for e in events_of(records, "cancel"))

    await read_topic(bootstrap, topics.events, cancel_running, timeout_s=180)
    await produce(bootstrap, topics.control, encode(ControlCommand(job_id="cancel", action="cancel")), b"cancel")
    job_ids = [str(spec["id"]) for spec in specs]
    records = await run_until_ended(stack, job_ids)

    ends = terminal_events(records, job_ids)
    assert {job_id: e.type for job_id, e in ends.items()} == {
        "keep-1": EventType.COMPLETED, "cancel": EventType.CANCELLED, "keep-2": EventType.COMPLETED
    }
    assert batches(runner) == {frozenset(job_ids)}
    # At once: its end was written while the others still ran (they went on to their last step after it).
    assert ends["cancel"].ts < min(ends["keep-1"].ts, ends["keep-2"].ts)
    assert max(e.data["step"] for e in events_of(records, "cancel") if e.type is EventType.PROGRESS) < 40
    # Its own partial image (its slice of the batch's latents, decoded), under its own key.
    cancelled = ends["cancel"].data
    assert [output["key"] for output in cancelled["outputs"]] == ["cancel/0.png"] and cancelled["seeds"] == [2]
    # Previews come from each job's own latents.
    previews = {
        job_id: {e.data["step"]: e.data["image"] for e in events_of(records, job_id) if e.type is EventType.PREVIEW}
        for job_id in job_ids
    }
    assert previews["keep-1"][1] != previews["keep-2"][1] != previews["cancel"][1]
    assert await committed_offsets(stack) == {0: 3}
