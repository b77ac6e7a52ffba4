"""Schemathesis against a live API's /openapi.json: no operation answers a 5xx, whatever it is sent, and every
answer is one the document lists (its status code, and its body where a schema is given).

Bounded: a few generated cases per operation, valid ones and (where an operation takes input) invalid ones,
each operation a subtest. The API is a live one on the session broker, on its own topic prefix and with no
runner, its key's queue already full: every request is parsed, authenticated and validated as usual, and a
valid job is answered 429 at once, so no synchronous route (A1111 txt2img, RunPod runsync) waits for a job and
no generated job reaches a runner. The WebSocket routes are documented but are no HTTP operations: left out.
(Schemathesis' pytest loader for a fixture's schema does not run under pytest 9.2, hence `as_strategy`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case
from schemathesis.generation.modes import GenerationMode
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from easel.local_kafka import LocalKafka
from tests.processes import HOME, Stack, make_stack

Operation = APIOperation[Any, Any, Any, Any]
WEBSOCKET_PATHS = ["/v1/stream", "/v1/jobs/{job_id}/stream"]
EXAMPLES_PER_OPERATION = 10


@pytest.fixture(scope="module")
def fuzzed_api(kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(kafka.bootstrap, tmp_path_factory.mktemp("fuzz"), "fuzz", HOME)
    stack.env |= {"EASEL_MAX_QUEUED_PER_KEY": "1", "EASEL_SYNC_WAIT_S": "1", "EASEL_JOB_TIMEOUT_S": "1"}
    try:
        stack.start_api()
        _fill_queue(stack)
        yield stack
    finally:
        stack.stop()


def test_every_operation_answers_as_documented(fuzzed_api: Stack, subtests: pytest.Subtests) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_api.base_url}/openapi.json").exclude(path=WEBSOCKET_PATHS)
    headers = {"Authorization": f"Bearer {fuzzed_api.key}"}
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) > 30  # every route but the WebSockets, each described validly
    for operation in operations:
        _fill_queue(fuzzed_api)  # again: a cancel or purge-queue just before may have emptied it
        for mode in _modes(operation):
            with subtests.test(operation=operation.label, mode=mode.value):
                _fuzz(operation, mode, headers)


def _fill_queue(stack: Stack) -> None:
    """The key's one queued job, so that every valid job is refused at once (429)."""
    queued = httpx.post(f"{stack.base_url}/v1/jobs", json={"prompt": "x"},
                        headers={"Authorization": f"Bearer {stack.key}"}, timeout=30)
    assert queued.status_code in (202, 429), queued.text


def _modes(operation: Operation) -> list[GenerationMode]:
    """Invalid input only where there is input to make invalid."""
    takes_input = bool(operation.path_parameters or operation.query or operation.body)
    return list(GenerationMode) if takes_input else [GenerationMode.POSITIVE]


def _fuzz(operation: Operation, mode: GenerationMode, headers: dict[str, Any]) -> None:
    try:
        _run(operation, mode, headers)
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        pytest.skip("every value of this operation's inputs is valid (free strings)")


def _run(operation: Operation, mode: GenerationMode, headers: dict[str, Any]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def no_server_error(case: Case[Operation]) -> None:
        case.call_and_validate(
            headers=headers, checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
            timeout=30,
        )

    no_server_error()
