"""The stream's pure parts: per-subscriber coalescing, the bounded history, preview sizing."""

from __future__ import annotations

import pytest
import torch

from consumers.stream_history import StreamHistory
from consumers.subscription import HARD_LIMIT_FACTOR, Overflowed, StreamItem, Subscription
from contract.events import EventType
from gpu_runner.previews import latents_to_image, preview_interval, preview_size, wants_preview


def item(seq: int, type: EventType, job_id: str = "a") -> StreamItem:
    return StreamItem(job_id=job_id, seq=seq, type=type, payload=b"{}")


def drain(subscription: Subscription) -> list[tuple[str, int]]:
    items = []
    while len(subscription):
        got = subscription._items.popleft()
        items.append((got.job_id, got.seq))
    return items


def test_a_full_queue_keeps_lifecycle_events_and_the_latest_progress_and_preview_per_job() -> None:
    subscription = Subscription(maxsize=4)
    subscription.offer(item(0, EventType.QUEUED))
    subscription.offer(item(1, EventType.STARTED))
    for seq in range(2, 8):
        subscription.offer(item(seq, EventType.PROGRESS if seq % 2 else EventType.PREVIEW))
    subscription.offer(item(0, EventType.PROGRESS, job_id="b"))
    subscription.offer(item(8, EventType.COMPLETED))
    assert drain(subscription) == [("a", 0), ("a", 1), ("a", 6), ("a", 7), ("b", 0), ("a", 8)]
    assert subscription.coalesced == 4


def test_duplicates_and_already_seen_events_are_skipped() -> None:
    subscription = Subscription(maxsize=8)
    subscription.seen("a", 2)
    for seq in (1, 2, 3, 3, 4):
        subscription.offer(item(seq, EventType.PROGRESS))
    assert drain(subscription) == [("a", 3), ("a", 4)]


def test_previews_can_be_declined_per_subscription() -> None:
    subscription = Subscription(maxsize=8, previews=False)
    subscription.offer(item(0, EventType.PREVIEW))
    subscription.offer(item(1, EventType.PROGRESS))
    assert drain(subscription) == [("a", 1)]


async def test_a_client_too_far_behind_on_lifecycle_events_is_told_to_resume() -> None:
    subscription = Subscription(maxsize=2)
    for n in range(2 * HARD_LIMIT_FACTOR + 1):
        subscription.offer(item(0, EventType.QUEUED, job_id=f"job-{n}"))
    with pytest.raises(Overflowed):
        await subscription.get()


def test_history_is_bounded_per_job_and_in_jobs_and_keeps_one_preview_after_the_end() -> None:
    history = StreamHistory(max_jobs=2, max_events=8)
    history.append(item(0, EventType.QUEUED))
    for seq in range(1, 12):
        history.append(item(seq, EventType.PREVIEW if seq % 2 else EventType.PROGRESS))
    assert not history.append(item(5, EventType.PROGRESS))  # a duplicate
    kept = history.get("a")
    assert kept is not None and len(kept.items) == 8 and kept.items[0].seq == 0
    history.append(item(12, EventType.FAILED))
    assert [(i.seq, i.type) for i in kept.items if i.type is EventType.PREVIEW] == [(11, EventType.PREVIEW)]
    history.append(item(0, EventType.QUEUED, job_id="b"))
    history.append(item(0, EventType.QUEUED, job_id="c"))
    assert history.get("a") is None and len(history) == 2


@pytest.mark.parametrize(
    ("size", "preview"), [((1024, 1024), (256, 256)), ((1216, 832), (256, 175)), ((128, 96), (128, 96))]
)
def test_preview_fits_256_pixels_and_is_never_larger_than_the_image(
    size: tuple[int, int], preview: tuple[int, int]
) -> None:
    assert preview_size(*size) == preview
    latents = torch.randn(2, 4, size[1] // 8, size[0] // 8)
    assert latents_to_image(latents, *size).size == preview


def test_preview_interval_is_about_ten_per_job_unless_configured() -> None:
    assert [preview_interval(steps) for steps in (4, 30, 50)] == [1, 3, 5]
    assert preview_interval(30, every=2) == 2
    assert [s for s in range(1, 31) if wants_preview(s, 30, 10)] == [10, 20]
