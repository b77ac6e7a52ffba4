"""Running a long-lived process until Ctrl-C or SIGTERM (`docker stop`, `easel dev`), then cleaning up."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import subprocess
from collections.abc import Coroutine
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Python collects its oldest generation whenever a quarter more objects have survived into it, and each time it
# walks all of them, holding the GIL: an API holding thousands of queued jobs paused up to 200 ms about twice a
# second under submit load (bench/submits.py), a runner up to 290 ms now and then. Young collections 70 times
# rarer leave a request's or a step's objects time to die young, so few reach the oldest generation.
GC_THRESHOLDS = (50_000, 20, 20)


def run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """Run `main`; on SIGINT or SIGTERM cancel it, so its `finally` blocks close consumers and producers."""

    async def supervised() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(supervised())


def settle_gc() -> None:
    """Once a long-lived process (API, runner, dispatcher) has loaded what it keeps for its life (modules, a
    pipeline): those objects out of every later collection (collected first, so no garbage is kept), and the
    thresholds above."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def raise_interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler for code that stops on KeyboardInterrupt (Ctrl-C) in its main thread."""
    raise KeyboardInterrupt


class StopRequest:
    """Set by the first SIGINT or SIGTERM once `listen()` was called; a polling loop checks `requested`.

    A flag rather than KeyboardInterrupt: an exception raised in the middle of starting or stopping a child
    could leave that child running with nobody to stop it.
    """

    def __init__(self) -> None:
        self.requested = False

    def listen(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._request)

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """SIGTERM, then SIGKILL after `timeout_s`. True when it had to be killed."""
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True
    return False
