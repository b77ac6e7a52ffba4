"""Commit points for records handled out of order: a partition's offset is committed only up to its
oldest record still being handled, so a crash re-reads exactly what was not finished.
"""

from __future__ import annotations

from aiokafka import TopicPartition


class OffsetTracker:
    def __init__(self) -> None:
        self._open: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}  # one past the last offset read
        self._committed: dict[TopicPartition, int] = {}

    def opened(self, tp: TopicPartition, offset: int) -> None:
        self._open.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def closed(self, tp: TopicPartition, offset: int) -> None:
        if (offsets := self._open.get(tp)) is not None:
            offsets.discard(offset)

    def in_flight(self, tp: TopicPartition) -> int:
        return len(self._open.get(tp, ()))

    def total_in_flight(self) -> int:
        return sum(len(offsets) for offsets in self._open.values())

    def to_commit(self, partitions: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Commit points that moved since the last call (for `partitions`, or all)."""
        points = {}
        for tp, after_last in self._next.items():
            if partitions is not None and tp not in partitions:
                continue
            offsets = self._open.get(tp)
            point = min(offsets) if offsets else after_last
            if point > self._committed.get(tp, -1):
                points[tp] = point
        return points

    def committed(self, points: dict[TopicPartition, int]) -> None:
        self._committed.update(points)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Partitions revoked: their records are another dispatcher's now."""
        for tp in partitions:
            self._open.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
