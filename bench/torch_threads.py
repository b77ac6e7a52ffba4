"""Why the runner keeps every torch call on one thread: the same job on the generator's thread, then
on a second thread (the main one), then on the generator's thread again now that two threads have
run torch (two OpenMP pools on the same cores).

Run: `.venv/bin/python -m bench.torch_threads` (tiny model, 256×256, 8 steps, p50 of 20 runs each).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from contract.job import Job
from gpu_runner.pipeline import SDXLGenerator, resolve_model

HOME = Path(__file__).resolve().parent.parent / ".easel"
JOB = Job(prompt="a lighthouse at dusk", width=256, height=256, steps=8, seed=11, id="bench", owner="bench")
RUNS = 20


def p50_ms(run: Callable[[], float]) -> float:
    for _ in range(3):
        run()
    return round(statistics.median(run() for _ in range(RUNS)) * 1000, 1)


def main() -> None:
    generator = SDXLGenerator(resolve_model("", HOME), "cpu")  # loads on its own thread

    def once() -> float:
        """On the calling thread: the private method skips generate()'s hop to the generator's thread."""
        started = time.perf_counter()
        generator._generate(JOB, [11], lambda step, total: None, None)
        return time.perf_counter() - started

    print(f"generator's thread only:           {p50_ms(lambda: generator.call(once))} ms")
    print(f"main thread (a second torch pool): {p50_ms(once)} ms")
    print(f"generator's thread, after that:    {p50_ms(lambda: generator.call(once))} ms")


if __name__ == "__main__":
    main()
