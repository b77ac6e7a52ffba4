"""A stack configured exactly as a fresh `make run`: `easel dev` itself (so `easel.dev.demo_env` and the rest of
its configuration apply as they do there), on the session's broker instead of a local one of its own.

Only what keeps a test's stack apart from others is set: the broker, a topic prefix, a port, a key, a blob folder.
No other EASEL_ variable leaks in from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.processes import HOME, EaselProcess, Stack, free_port, wait_for_health


def fresh_env(bootstrap: str, workdir: Path, prefix: str, port: int, key: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("EASEL_")}
    return {
        **env,
        "HF_HUB_OFFLINE": "1",
        "EASEL_KAFKA_BOOTSTRAP": bootstrap,  # stands in for the broker `easel dev` starts when none is configured
        "EASEL_TOPIC_PREFIX": prefix,
        "EASEL_PORT": str(port),
        "EASEL_HOME": str(HOME),  # the dev home `make run` uses: the tiny model and tiny refiner live there
        "EASEL_BLOB_URL": str(workdir / "blobs"),
        "EASEL_DEV_KEY": key,
    }


@contextmanager
def fresh_stack(bootstrap: str, workdir: Path, prefix: str) -> Iterator[Stack]:
    """`easel dev` serving on a free port, its runner ready; stopped (every child with it) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, key = free_port(), f"dev-key-{prefix}"
    env = fresh_env(bootstrap, workdir, prefix, port, key)
    dev = EaselProcess("dev", env, workdir / "dev.log")
    stack = Stack(env=env, workdir=workdir, port=port, key=key, processes=[dev])
    try:
        wait_for_health(stack.base_url, dev, timeout_s=180)
        dev.wait_for_output("runner ready", timeout_s=180)
        yield stack
    finally:
        stack.stop()
