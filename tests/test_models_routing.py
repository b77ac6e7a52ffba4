"""Several models (EASEL_MODELS): topic naming and settings parsing, then two models in one stack, a runner each.

Both models are the tiny model (the test is about routing, not about what each draws); which runner ran a job is
in its status (`runner_id`), and which topic carried it is read from Kafka.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from contract.catalog import Catalog, ServedModel, runner_model, runner_settings, served_models
from contract.errors import SettingsError
from contract.job import JobSpec
from contract.keys import key_id
from contract.loras import LoraFolder
from contract.settings import Settings
from contract.topics import Topics
from easel.dev import PROCESSES, demo_env, dev_children
from easel.local_kafka import LocalKafka
from easel.runners import parse_models, runner_children
from tests.kafka_io import job_events, produce, read_topic
from tests.processes import HOME, EaselProcess, Stack, make_stack
from tests.webhook_receiver import Receiver

TWO = Settings(models=("base=/models/a", "turbo=org/turbo"), topic_prefix="p")
JOB = {"width": 64, "height": 64, "steps": 2, "seed": 3}


# Units: naming, parsing, launching.


def test_the_first_model_keeps_todays_topic_group_and_transactions_and_the_others_get_their_own() -> None:
    topics = Topics("p")
    catalog = Catalog.from_settings(TWO)
    assert catalog.models == ("base", "turbo", "default") and catalog.routed == ("turbo",)
    assert [catalog.request_topic(topics, name) for name in ("base", "default", "turbo")] == [
        "p.jobs.requests", "p.jobs.requests", "p.jobs.requests.turbo",
    ]
    assert catalog.request_topics(topics) == ["p.jobs.requests", "p.jobs.requests.turbo"]
    assert catalog.runner_groups(topics) == ["p.runners", "p.runners.turbo"]
    assert topics.runner_transactions_for(None) == "p" and topics.runner_transactions_for("turbo") == "p.runner.turbo"
    assert [spec.name for spec in topics.specs(2, catalog.routed)][:2] == ["p.jobs.requests", "p.jobs.requests.turbo"]
    assert catalog.source("default") == "/models/a" and catalog.source("turbo") == "org/turbo"


def test_one_model_is_unchanged() -> None:
    bare = Catalog.from_settings(Settings())
    assert bare == Catalog(loras=LoraFolder(Path(".easel/loras")))
    assert bare.routed == () and bare.request_topics(Topics("p")) == ["p.jobs.requests"]
    named = Catalog.from_settings(Settings(model="/m", model_name="sd_xl_base_1.0"))
    assert named.models == ("sd_xl_base_1.0", "default") and named.source("sd_xl_base_1.0") == "/m"
    assert runner_settings(Settings(model="/m")) == Settings(model="/m")


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (("base",), "is not name=folder-or-hub-id"),
        (("base=",), "is not name=folder-or-hub-id"),
        (("default=/m",), "always names the first model"),
        (("my model=/m",), "letters, digits"),
        (("a/b=/m",), "letters, digits"),
        (("x" * 240 + "=/m",), "at most"),
        (("base=/a", "base=/b"), "would name the same Kafka topic"),
        (("sd_xl_1.0=/a", "sd_xl_1_0=/b"), "would name the same Kafka topic"),
    ],
)
def test_bad_model_lists_are_refused_at_start(models: tuple[str, ...], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Catalog.from_settings(Settings(models=models))


def test_easel_models_parses_from_the_environment_and_a_runner_picks_its_entry() -> None:
    settings = Settings.from_env({"EASEL_MODELS": "base=/models/a, turbo=org/turbo"})
    assert served_models(settings) == (ServedModel("base", "/models/a"), ServedModel("turbo", "org/turbo"))
    assert runner_model(settings) == ServedModel("base", "/models/a")  # EASEL_MODEL_NAME unset: the first
    turbo = runner_settings(settings.replace(model_name="turbo"))
    assert (turbo.model, turbo.model_name) == ("org/turbo", "turbo")
    with pytest.raises(SettingsError, match="EASEL_MODEL_NAME='other' is not one of EASEL_MODELS: base, turbo"):
        runner_model(settings.replace(model_name="other"))


def test_a_runner_serves_only_its_model_and_the_first_answers_to_default() -> None:
    catalog = Catalog.from_settings(TWO)
    assert catalog.serving("base").models == ("base", "default")
    assert catalog.serving("turbo").models == ("turbo",)
    assert catalog.serving("turbo").model_name == "turbo"  # what its infotexts name
    assert catalog.problem(JobSpec(prompt="p", model="nope")) == ("model", "must be one of: base, turbo, default")


def test_launchers_start_a_runner_per_model() -> None:
    children = runner_children(TWO.replace(runner_id="box"), ["cuda:0", "cuda:1"], parse_models(TWO, ""))
    assert [(c.name, c.env["EASEL_DEVICE"], c.env["EASEL_MODEL_NAME"]) for c in children] == [
        ("box-base-cuda0", "cuda:0", "base"), ("box-turbo-cuda0", "cuda:0", "turbo"),
        ("box-base-cuda1", "cuda:1", "base"), ("box-turbo-cuda1", "cuda:1", "turbo"),
    ]
    assert [c.name for c in runner_children(TWO.replace(runner_id="box"), ["cpu"], parse_models(TWO, "turbo"))] == [
        "box-turbo-cpu0"
    ]
    with pytest.raises(SettingsError, match="other not in EASEL_MODELS"):
        parse_models(TWO, "turbo,other")
    with pytest.raises(SettingsError, match="EASEL_MODELS is not set"):
        parse_models(Settings(), "turbo")

    assert demo_env(TWO) == {}  # the operator named every model: no demo names
    env = {"EASEL_RUNNER_ID": "dev-runner-0"}
    dev = dev_children(TWO, env)
    assert [c.name for c in dev] == ["api", "runner-base", "runner-turbo", "webhooks"]
    assert [c.argv[-1] for c in dev] == ["api", "runner", "runner", "webhooks"]
    assert dev[2].env["EASEL_RUNNER_ID"] == "dev-runner-0-turbo" and dev[2].env["EASEL_MODEL_NAME"] == "turbo"
    assert [c.name for c in dev_children(Settings(), env)] == list(PROCESSES)


# Two models in one stack.


@pytest.fixture(scope="module")
def two_models(kafka: LocalKafka, tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(kafka.bootstrap, tmp_path_factory.mktemp("models"), f"models-{uuid.uuid4().hex[:8]}", HOME)
    stack.env["EASEL_MODELS"] = f"base={tiny_model},turbo={tiny_model}"
    stack.env["EASEL_BATCH_MAX_IMAGES"] = "1"
    try:
        stack.start_api()
        for name in ("base", "turbo"):
            env = {**stack.env, "EASEL_RUNNER_ID": f"runner-{name}", "EASEL_MODEL_NAME": name}
            runner = EaselProcess("runner", env, Path(stack.workdir) / f"runner-{name}.log")
            stack.processes.append(runner)
        for runner in stack.processes[1:]:
            runner.wait_for_output("runner ready")
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def api(two_models: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {two_models.key}"}
    with httpx.Client(base_url=two_models.base_url, headers=headers, timeout=90) as client:
        yield client


def submit(api: httpx.Client, **fields: Any) -> str:
    response = api.post("/v1/jobs", json={"prompt": "routing", **JOB, **fields})
    assert response.status_code in (200, 201, 202), response.text
    return str(response.json()["id"])


def finished(api: httpx.Client, job_id: str) -> dict[str, Any]:
    for _ in range(10):
        status: dict[str, Any] = api.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
        if status["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return status
    raise AssertionError(f"{job_id} did not finish: {status}")


def wait_for_state(api: httpx.Client, job_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        if status["state"] == state:
            return status
        time.sleep(0.1)
    raise AssertionError(f"{job_id} never {state}")


@pytest.mark.slow
async def test_each_job_runs_on_the_runner_holding_its_model(two_models: Stack, api: httpx.Client) -> None:
    ran_on = {name: finished(api, submit(api, model=name)) for name in ("base", "turbo", "default")}
    assert {name: (s["state"], s["runner_id"]) for name, s in ran_on.items()} == {
        "base": ("COMPLETED", "runner-base"),
        "turbo": ("COMPLETED", "runner-turbo"),
        "default": ("COMPLETED", "runner-base"),  # the first model
    }
    # The turbo job went through turbo's own topic; the first model's stays today's.
    topics = Topics(two_models.prefix)
    turbo_topic = await read_topic(
        two_models.env["EASEL_KAFKA_BOOTSTRAP"], topics.requests_for("turbo"),
        lambda rs: any(r.key == ran_on["turbo"]["id"].encode() for r in rs), timeout_s=10,
    )
    assert {orjson.loads(r.value)["model"] for r in turbo_topic} == {"turbo"}


@pytest.mark.slow
def test_an_unknown_model_is_refused_naming_model_and_listing_both(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json={"prompt": "p", **JOB, "model": "sd15"})
    assert 400 <= response.status_code < 500
    text = response.text
    assert "model" in text and "base" in text and "turbo" in text, text


@pytest.mark.slow
async def test_a1111_lists_both_and_sd_model_checkpoint_picks_one(two_models: Stack, api: httpx.Client) -> None:
    models = api.get("/sdapi/v1/sd-models").json()
    assert {"base", "turbo"} <= {m["title"] for m in models}
    prompt = f"a1111 picks turbo {uuid.uuid4().hex[:8]}"
    payload = {"prompt": prompt, **JOB, "override_settings": {"sd_model_checkpoint": "turbo"}}
    response = api.post("/sdapi/v1/txt2img", json=payload)
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 1
    records = await read_topic(
        two_models.env["EASEL_KAFKA_BOOTSTRAP"], Topics(two_models.prefix).requests_for("turbo"),
        lambda rs: any(orjson.loads(r.value)["prompt"] == prompt for r in rs), timeout_s=10,
    )
    assert any(orjson.loads(r.value)["model"] == "turbo" for r in records)


@pytest.mark.slow
def test_runpod_endpoint_id_picks_the_model_and_health_counts_every_models_runners(api: httpx.Client) -> None:
    response = api.post("/v2/turbo/runsync", json={"input": {"prompt": "runpod turbo", **JOB}})
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    assert api.get(f"/v1/jobs/{job_id}").json()["runner_id"] == "runner-turbo"
    workers = api.get("/v2/turbo/health").json()["workers"]
    assert workers["idle"] + workers["running"] == 2, workers


@pytest.mark.slow
async def test_a_kafka_direct_job_on_another_models_topic_fails_naming_model_and_the_runner_goes_on(
    two_models: Stack, api: httpx.Client
) -> None:
    topics = Topics(two_models.prefix)
    bootstrap = two_models.env["EASEL_KAFKA_BOOTSTRAP"]
    job = {"id": f"direct-{uuid.uuid4().hex[:12]}", "owner": key_id(two_models.key), "prompt": "lost", **JOB,
           "model": "turbo"}
    await produce(bootstrap, topics.requests, job, key=str(job["id"]).encode())  # the first model's topic
    events = await job_events(bootstrap, topics.events, str(job["id"]))
    error = events[-1].data["error"]
    assert error.startswith("model:") and topics.requests_for("turbo") in error, error
    after = finished(api, submit(api, model="base"))
    assert (after["state"], after["runner_id"]) == ("COMPLETED", "runner-base")


@pytest.mark.slow
def test_a_slow_job_on_one_model_does_not_hold_back_the_other(api: httpx.Client) -> None:
    slow = submit(api, model="base", width=512, height=512, steps=150)
    wait_for_state(api, slow, "IN_PROGRESS")
    quick = finished(api, submit(api, model="turbo"))
    assert quick["state"] == "COMPLETED"
    still = api.get(f"/v1/jobs/{slow}").json()
    assert still["state"] == "IN_PROGRESS", still  # the turbo job finished first
    api.post(f"/v1/jobs/{slow}/cancel")
    assert finished(api, slow)["state"] == "CANCELLED"


@pytest.mark.slow
async def test_the_dispatcher_delivers_webhooks_for_the_second_models_jobs(
    two_models: Stack, api: httpx.Client
) -> None:
    dispatcher = two_models.start_dispatcher("webhooks-models")
    dispatcher.wait_for_output("webhook dispatcher ready")
    receiver = await Receiver().start()
    try:
        job_id = submit(api, model="turbo", webhook={"url": receiver.url("turbo")})
        got = (await receiver.wait_for("turbo", 1))[0]
        assert job_id in got.body.decode(), got.body
    finally:
        await receiver.stop()
