"""The retry schedule: the delay before each attempt, and which retry topic holds a waiting delivery.

Each distinct delay has its own topic, so the records of one topic fall due in the order they were
written; the dispatcher reads each from its committed offset again after a restart.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from contract.errors import SettingsError
from contract.settings import Settings


@dataclass(frozen=True)
class RetrySchedule:
    delays_s: tuple[float, ...]  # delays_s[n]: wait before attempt n + 1 (attempt 1 is usually immediate)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrySchedule:
        try:
            delays = tuple(float(d) for d in settings.webhook_retry_schedule_s)
        except ValueError:
            raise SettingsError("EASEL_WEBHOOK_RETRY_SCHEDULE_S: must be comma-separated seconds") from None
        if not delays or any(d < 0 for d in delays):
            raise SettingsError("EASEL_WEBHOOK_RETRY_SCHEDULE_S: needs at least one delay, none negative")
        return cls(delays)

    @property
    def attempts(self) -> int:
        return len(self.delays_s)

    @property
    def tiers_ms(self) -> list[int]:
        """One retry topic per distinct delay after the first attempt."""
        return sorted({max(1, round(d * 1000)) for d in self.delays_s[1:]})

    @property
    def longest_s(self) -> float:
        return max(self.delays_s)

    def next_delay_s(self, attempts_made: int, retry_after_s: float | None) -> float | None:
        """The wait before the next attempt, or None when the schedule is used up.

        A receiver's Retry-After is honoured when it asks for longer, up to the longest delay.
        """
        if attempts_made >= self.attempts:
            return None
        delay = self.delays_s[attempts_made]
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.longest_s))
        return delay

    def tier_ms(self, delay_s: float) -> int:
        """The shortest retry topic whose delay covers `delay_s` (the longest one if none does)."""
        tiers = self.tiers_ms
        index = bisect.bisect_left(tiers, round(delay_s * 1000))
        return tiers[min(index, len(tiers) - 1)]
