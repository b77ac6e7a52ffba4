"""Background tasks with one owner: spawned into it, stopped together, unexpected failures logged.

Like `asyncio.TaskGroup`, but stopped from outside (a view's `stop()`, a revoked partition) rather
than by leaving a block, and one failing task does not cancel the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Background:
    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    async def stop(self) -> None:
        """Cancel every task and wait until all of them have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # Tasks handle the failures they expect; what reaches here is a bug, and nobody awaits it.
            log.error("background task failed", owner=self._owner, task=task.get_name(), exc_info=error)
