"""RunPod fidelity, through the stock `runpod` client where it has the call: /health counts the runners,
/purge-queue ends queued jobs CANCELLED at once, `input.track_id` is taken in every shape and echoed, timeouts are
refused by the name the client sent, and an endpoint id naming a model selects it."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import runpod

from consumers.state_view import StateView
from consumers.webhooks.bodies import render_body
from contract.errors import InvalidField
from contract.events import Event, EventType
from contract.job import Job, WebhookSpec
from contract.lifecycle import queued_status
from contract.settings import Settings
from dialects import runpod as runpod_dialect
from service.workers import WorkerCensus
from tests.processes import Stack

PUBLIC = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "num_inference_steps": 2}
A1111_API = {"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"},
             "payload": {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64}}
A1111_PLAIN = {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64}
# Long enough on the tiny model to keep the one runner busy while the test looks at the queue.
LONG = {**PUBLIC, "width": 512, "height": 512, "num_inference_steps": 150}


@pytest.fixture
def endpoint(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> runpod.Endpoint:
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{stack.base_url}/v2")
    monkeypatch.setattr(runpod, "api_key", stack.key)
    return runpod.Endpoint("easel-sdxl")


def _until(check: Any, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)
    return result


def test_health_counts_the_runner_idle_then_running(endpoint: runpod.Endpoint) -> None:
    # The session stack has one runner: idle between jobs (the count is cached for a moment: wait it out).
    assert _until(lambda: endpoint.health(timeout=30)["workers"] == {"idle": 1, "running": 0})
    job = endpoint.run(LONG)
    try:
        assert _until(lambda: endpoint.health(timeout=30)["workers"] == {"idle": 0, "running": 1})
    finally:
        job.cancel(timeout=30)


async def test_health_falls_back_to_the_view_when_the_broker_cannot_be_asked() -> None:
    settings = Settings.from_env({"EASEL_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    workers = await WorkerCensus(settings).count(StateView(settings))  # an empty view: nobody is running
    assert (workers.idle, workers.running) == (0, 0)


def test_purge_queue_ends_queued_jobs_cancelled_at_once(endpoint: runpod.Endpoint) -> None:
    running = endpoint.run(LONG)
    _until(lambda: running.status() == "IN_PROGRESS")
    queued = [endpoint.run(PUBLIC) for _ in range(2)]
    try:
        assert [job.status() for job in queued] == ["IN_QUEUE", "IN_QUEUE"]
        assert endpoint.purge_queue(timeout=30) == {"removed": 2, "status": "completed"}
        assert [job.status() for job in queued] == ["CANCELLED", "CANCELLED"]  # at once, not when a runner gets there
        assert running.status() == "IN_PROGRESS"  # purge-queue leaves running jobs be
    finally:
        running.cancel(timeout=30)
    assert _until(lambda: running.status() == "CANCELLED")
    # The runner reaches the purged requests and only repeats their outcome: they stay CANCELLED, nothing ran.
    time.sleep(1)
    assert [job.status() for job in queued] == ["CANCELLED", "CANCELLED"]


@pytest.mark.parametrize("job_input", [PUBLIC, A1111_API, A1111_PLAIN], ids=["public", "a1111-api", "a1111"])
def test_track_id_is_taken_in_every_shape_and_echoed(
    endpoint: runpod.Endpoint, client: httpx.Client, job_input: dict[str, Any]
) -> None:
    job = endpoint.run({"input": {**job_input, "track_id": "order-42"}, "webhook": "http://127.0.0.1:9/hook"})
    assert job.output(timeout=120)
    assert client.get(f"/v1/jobs/{job.job_id}").json()["track_id"] == "order-42"


def test_the_runpod_webhook_echoes_the_track_id() -> None:
    body = {"input": {**PUBLIC, "track_id": "order-42"}}
    assert runpod_dialect.track_id(body) == "order-42"
    fields, _ = runpod_dialect.job_fields(body, ("default",))
    assert "track_id" not in fields
    job = Job(**fields, id="j1", owner="o", dialect="runpod", client_input=body["input"],
              webhook=WebhookSpec(url="https://example.test/hook", track_id="order-42"))
    event = Event(job_id="j1", seq=0, type=EventType.QUEUED)
    rendered = render_body("runpod", event, queued_status(job, 0.0), "https://example.test/hook", "order-42",
                           Settings.from_env({}))
    assert rendered["track_id"] == "order-42" and rendered["input"]["track_id"] == "order-42"


@pytest.mark.parametrize("track_id", [42, "x" * 257])
def test_a_bad_track_id_is_refused_by_its_name(track_id: object) -> None:
    with pytest.raises(InvalidField) as error:
        runpod_dialect.job_fields({"input": {**PUBLIC, "track_id": track_id}}, ("default",))
    assert error.value.field == "input.track_id"


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"executionTimeout": 3_600_001}, "policy.executionTimeout"),
        ({"executionTimeout": 600_001}, "policy.executionTimeout"),  # over the runners' EASEL_JOB_TIMEOUT_S (600 s)
        ({"executionTimeout": 0}, "policy.executionTimeout"),
        ({"ttl": 7 * 24 * 3600 * 1000 + 1}, "policy.ttl"),
        ({"ttl": "soon"}, "policy.ttl"),
        ({"lowPriority": "yes"}, "policy.lowPriority"),
        ({"timeout": 5}, "policy.timeout"),
    ],
)
def test_timeouts_out_of_range_are_400_naming_the_field_sent(
    stack: Stack, policy: dict[str, object], field: str
) -> None:
    response = httpx.post(f"{stack.base_url}/v2/easel-sdxl/run", json={"input": PUBLIC, "policy": policy},
                          headers={"Authorization": stack.key}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{field}: "), response.text
    assert "execution_timeout_s" not in response.text and "ttl_s" not in response.text


def test_timeouts_in_range_are_taken_in_seconds() -> None:
    body = {"input": PUBLIC, "policy": {"executionTimeout": 600_000, "ttl": 10_000, "lowPriority": True}}
    fields, _ = runpod_dialect.job_fields(body, ("default",), max_execution_s=600)
    assert (fields["execution_timeout_s"], fields["ttl_s"]) == (600.0, 10.0)


def test_an_endpoint_id_naming_a_model_selects_it() -> None:
    models = ("default", "sdxl-base")
    assert runpod_dialect.job_fields({"input": PUBLIC}, models, endpoint_id="sdxl-base")[0]["model"] == "sdxl-base"
    assert "model" not in runpod_dialect.job_fields({"input": PUBLIC}, models, endpoint_id="anything")[0]
    named = {**A1111_PLAIN, "override_settings": {"sd_model_checkpoint": "default"}}
    plain, _ = runpod_dialect.job_fields({"input": A1111_PLAIN}, models, endpoint_id="sdxl-base")
    assert plain["model"] == "sdxl-base"
    # A request that names its model keeps it (here "default", which is also what a request naming none gets).
    assert runpod_dialect.job_fields({"input": named}, ("default",), endpoint_id="x")[0]["model"] == "default"
