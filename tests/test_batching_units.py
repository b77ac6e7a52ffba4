"""Dynamic batching without Kafka: which jobs fit one batch, how far offsets may commit, and the pipeline's batch
call (each job's images as when it runs alone, each job's previews from its own latents)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contract.job import Job
from gpu_runner.batching import BatchFill, OffsetLedger, batch_key
from gpu_runner.pipeline import BatchItem, SDXLGenerator
from gpu_runner.tiny_model import save_tiny_refiner


def job(**changes: object) -> Job:
    fields: dict[str, object] = {"prompt": "a fox", "id": "j", "owner": "o", "width": 72, "height": 64, "steps": 3}
    return Job.model_validate({**fields, **changes})


@pytest.mark.parametrize(
    "change",
    [
        {"width": 80}, {"height": 72}, {"steps": 4}, {"sampler": "DPM++ 2M"}, {"schedule": "karras"},
        {"guidance": 7.0}, {"model": "other"}, {"refiner": "refiner"},
    ],
)
def test_what_a_pipeline_call_shares_keeps_jobs_apart(change: dict[str, object]) -> None:
    assert batch_key(job(**change)) != batch_key(job())


def test_what_each_job_keeps_for_itself_does_not() -> None:
    own = job(id="other", prompt="a cat", negative_prompt="blur", seed=9, num_images=2, preview=True,
              output_format="jpeg", safety_checker=True, owner="someone")
    assert batch_key(own) == batch_key(job())


def test_a_batch_counts_images_and_takes_only_compatible_jobs() -> None:
    fill = BatchFill(job(num_images=2), max_images=4)
    assert not fill.accepts(job(steps=5))
    assert not fill.accepts(job(num_images=3))  # 5 images
    fill.add(job(id="b"))
    assert not fill.is_full()
    with pytest.raises(ValueError):
        fill.add(job(id="c", num_images=2))
    fill.add(job(id="c"))
    assert fill.is_full() and [j.id for j in fill.jobs] == ["j", "b", "c"] and fill.images == 4


def test_the_first_job_always_fits() -> None:
    fill = BatchFill(job(num_images=4), max_images=1)
    assert fill.is_full() and not fill.accepts(job())


def test_an_early_end_never_moves_the_offset_past_a_job_still_running() -> None:
    ledger = OffsetLedger([("p0", 5), ("p0", 6), ("p0", 7), ("p1", 2)])
    assert ledger.next_offset("p0", 7) == 5  # 7 ended first (cancelled): 5 and 6 still run
    ledger.settle("p0", 7)
    assert ledger.next_offset("p1", 2) == 3  # other partitions go their own way
    ledger.settle("p1", 2)
    assert ledger.next_offset("p0", 5) == 6
    ledger.settle("p0", 5)
    assert ledger.next_offset("p0", 6) == 8  # past 7 too: it ended before
    ledger.settle("p0", 6)
    assert ledger.unsettled() == {}


def test_a_request_never_settled_is_read_again_from() -> None:
    ledger = OffsetLedger([("p0", 5), ("p0", 6)])
    assert ledger.next_offset("p0", 6) == 5
    ledger.settle("p0", 6)
    assert ledger.unsettled() == {"p0": 5}


@pytest.fixture(scope="module")
def generator(tiny_model: str) -> SDXLGenerator:
    return SDXLGenerator(tiny_model, "cpu")


def pixels_apart(a: bytes, b: bytes) -> int:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_each_job_of_a_batch_gets_its_own_images_as_alone(generator: SDXLGenerator) -> None:
    first = job(id="a", prompt="a red fox", negative_prompt="blurry", num_images=2)
    second = job(id="b", prompt="a blue bird")
    latents: dict[str, list[torch.Tensor]] = {"a": [], "b": []}
    items = [
        BatchItem(first, [10, 11], lambda step, total, x, x0: latents["a"].append(x.clone())),
        BatchItem(second, [20], lambda step, total, x, x0: latents["b"].append(x.clone())),
    ]
    steps: list[int] = []
    batched = generator.generate_batch(items, lambda step, total: steps.append(step))
    assert steps == [1, 2, 3]  # once per step for the whole batch
    assert [len(images) for images in batched] == [2, 1]
    assert [x.shape[0] for x in latents["a"]] == [2, 2, 2] and [x.shape[0] for x in latents["b"]] == [1, 1, 1]

    alone_first = generator.generate(first, [10, 11], lambda step, total: None)
    [alone_second] = generator.generate(second, [20], lambda step, total: None)
    # Close, not bitwise equal: a batch changes the CPU kernels' summation order (diffusers allows 3e-3).
    for together, alone in zip([*batched[0], *batched[1]], [*alone_first, alone_second], strict=True):
        assert pixels_apart(together.tobytes(), alone.tobytes()) <= 3
    # Prompts are the jobs' own: the same seed under another prompt is another image.
    [other_prompt] = generator.generate(job(prompt="a blue bird"), [10], lambda step, total: None)
    assert pixels_apart(other_prompt.tobytes(), alone_first[0].tobytes()) > 3


def test_a_batch_with_a_refiner_keeps_each_job_apart(tiny_model: str, tmp_path: Path) -> None:
    generator = SDXLGenerator(tiny_model, "cpu", refiner=str(save_tiny_refiner(tmp_path)))
    first = job(id="a", refiner="refiner", steps=5, negative_prompt="blurry")
    second = job(id="b", prompt="a cat", refiner="refiner", steps=5)
    batched = generator.generate_batch([BatchItem(first, [4]), BatchItem(second, [5])], lambda step, total: None)
    assert generator.refiner is not None and generator.refiner.num_timesteps > 0  # the refiner had its share
    [alone] = generator.generate(second, [5], lambda step, total: None)
    assert pixels_apart(batched[1][0].tobytes(), alone.tobytes()) <= 3
