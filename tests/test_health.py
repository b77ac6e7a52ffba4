"""Health as Kubernetes reads it: readiness follows Kafka (its own broker here), liveness never does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from easel.local_kafka import LocalKafka
from tests.conftest import HOME
from tests.processes import Stack, make_stack, own_broker


@pytest.fixture
def broker() -> Iterator[LocalKafka]:
    with own_broker() as broker:
        yield broker


@pytest.fixture
def stack(broker: LocalKafka, tmp_path: Path) -> Iterator[Stack]:
    stack = make_stack(broker.bootstrap, tmp_path, "health", HOME)
    stack.env["EASEL_HEALTH_MAX_LAG_S"] = "2"
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def until(stack: Stack, ready_status: int) -> httpx.Response:
    """Poll /health/ready until it answers `ready_status`; liveness must say 200 all along."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert httpx.get(f"{stack.base_url}/health/live", timeout=5).status_code == 200
        ready = httpx.get(f"{stack.base_url}/health/ready", timeout=5)
        if ready.status_code == ready_status:
            return ready
        time.sleep(0.5)
    raise AssertionError(f"/health/ready never answered {ready_status}: {ready.status_code} {ready.text}")


def test_ready_follows_the_broker_and_live_does_not(broker: LocalKafka, stack: Stack) -> None:
    ready = until(stack, 200).json()
    assert ready["status"] == "ok"
    assert all(part["ok"] for part in ready["parts"].values())
    assert set(ready["parts"]) == {"producer", "state_view", "stream_hub"}
    health = httpx.get(f"{stack.base_url}/health", timeout=5).json()
    assert health["status"] == "ok" and health["jobs_known"] == 0

    broker.stop()
    gone = until(stack, 503).json()
    assert gone["status"] == "unavailable"
    view = gone["parts"]["state_view"]
    assert view["ok"] is False and "not caught up with Kafka" in view["problem"]
    assert httpx.get(f"{stack.base_url}/health", timeout=5).status_code == 503

    broker.start()  # the same data and port: the broker came back
    back = until(stack, 200).json()
    assert all(part["ok"] for part in back["parts"].values())
    headers = {"Authorization": f"Bearer {stack.key}"}
    submit = httpx.post(f"{stack.base_url}/v1/jobs", json={"prompt": "x"}, headers=headers, timeout=30)
    assert submit.status_code == 202, submit.text

