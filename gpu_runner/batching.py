"""Dynamic batching: which waiting jobs may share one pipeline call, and how far each partition's offset may go.

Jobs that agree on everything the pipeline call shares (`batch_key`) run as one batch; each keeps its own
prompts, seeds, images and outcome. The runner's turn over its partitions picks the batch's first job (so
batching lets no key starve the others more than one job at a time did); compatible jobs at the heads of
the partitions, taken in the same turn, fill it up to `max_images` images. A partition's jobs join in
offset order and none is skipped, so what a batch holds of a partition is a run of consecutive records.

Jobs of a batch end at different times (one cancelled ends at once), but a partition's committed offset
must never pass a job still running: `OffsetLedger` says how far each outcome may move it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from contract.job import Job

BatchKey = tuple[object, ...]


def batch_key(job: Job) -> BatchKey:
    """What a pipeline call shares between its images: jobs with equal keys can run together.

    The input images go in by key (the call takes one init image and one mask), with what is done to them; the
    mask's settings only where there is a mask. LoRA adapters are loaded into the pipeline for the whole call.
    """
    mask = (job.mask_blur, job.mask_crop_padding) if job.mask_image is not None else None
    return (
        job.model, job.refiner, job.refiner_switch_at, job.width, job.height, job.steps, job.sampler, job.schedule,
        job.guidance, job.init_image, job.strength, job.mask_image, mask,
        tuple((lora.name, lora.weight) for lora in job.loras),
    )


class BatchFill:
    """The jobs of one batch: the first decides the key; others join while compatible and while images fit.

    The first job always fits, whatever its number of images.
    """

    def __init__(self, first: Job, max_images: int) -> None:
        self.key = batch_key(first)
        self.max_images = max_images
        self.jobs = [first]
        self.images = first.num_images

    def is_full(self) -> bool:
        return self.images >= self.max_images

    def accepts(self, job: Job) -> bool:
        return batch_key(job) == self.key and self.images + job.num_images <= self.max_images

    def add(self, job: Job) -> None:
        if not self.accepts(job):
            raise ValueError(f"job {job.id} does not fit this batch")
        self.jobs.append(job)
        self.images += job.num_images


class OffsetLedger:
    """The records of one batch whose outcomes are not committed yet, per partition.

    A batch holds consecutive records of a partition, so once one is settled, every record before the lowest
    one still in hand is settled too: that is how far the partition's committed offset may go.
    """

    def __init__(self, records: Iterable[tuple[Hashable, int]]) -> None:
        self._in_hand: dict[Hashable, set[int]] = {}
        self._last: dict[Hashable, int] = {}
        for partition, offset in records:
            self._in_hand.setdefault(partition, set()).add(offset)
            self._last[partition] = max(offset, self._last.get(partition, offset))

    def next_offset(self, partition: Hashable, offset: int) -> int:
        """The committed offset once `offset` is settled: before the lowest record of the partition still in hand,
        else past the batch's last record of it."""
        others = self._in_hand.get(partition, set()) - {offset}
        return min(others, default=self._last.get(partition, offset) + 1)

    def settle(self, partition: Hashable, offset: int) -> None:
        """`offset`'s outcome is committed."""
        self._in_hand.get(partition, set()).discard(offset)

    def unsettled(self) -> dict[Hashable, int]:
        """Each partition's lowest record still in hand: what it must be read again from."""
        return {partition: min(offsets) for partition, offsets in self._in_hand.items() if offsets}
