"""Running a long-lived process until Ctrl-C or SIGTERM (`docker stop`, `easel dev`), then cleaning up."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any


def run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """Run `main`; on SIGINT or SIGTERM cancel it, so its `finally` blocks close consumers and producers."""

    async def supervised() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(supervised())


def raise_interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler for code that stops on KeyboardInterrupt (Ctrl-C) in its main thread."""
    raise KeyboardInterrupt
