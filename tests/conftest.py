"""Session fixtures: one real Kafka broker, the tiny SDXL model, and one API + runner stack."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from contract.settings import Settings
from easel.local_kafka import LocalKafka
from gpu_runner.pipeline import resolve_model
from tests.processes import HOME, Stack, make_stack, own_broker


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    with own_broker() as broker:
        yield broker


@pytest.fixture(scope="session")
def tiny_model() -> str:
    return resolve_model("", HOME)


@pytest.fixture(scope="session")
def stack(kafka: LocalKafka, tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(kafka.bootstrap, tmp_path_factory.mktemp("stack"), "main", HOME)
    with stack.serving() as serving:
        yield serving


@pytest.fixture
def settings(stack: Stack) -> Settings:
    return Settings.from_env(stack.env)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture(scope="session")
def job_spec() -> dict[str, object]:
    """Small and fast on a CPU with the tiny model."""
    return {"prompt": "a lighthouse at dusk", "width": 128, "height": 96, "steps": 4, "seed": 7}
