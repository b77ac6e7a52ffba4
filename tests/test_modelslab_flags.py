"""ModelsLab's flags read by one rule, `track_id` echoed as sent (integers too), enhance_prompt / enhance_style."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from contract.errors import InvalidField
from contract.job import Job
from contract.lifecycle import queued_status
from contract.states import JobState, JobStatus
from dialects import modelslab
from tests.processes import WEBHOOK_SECRET, EaselProcess, Stack
from tests.webhook_receiver import Receiver

SMALL = {"width": "64", "height": "64", "num_inference_steps": 3}
TRUE_VALUES: tuple[object, ...] = (True, "yes", "YES", "true", "True", 1, "1", " yes ")
FALSE_VALUES: tuple[object, ...] = (False, "no", "No", "false", 0, "0", None)
BAD_VALUES: tuple[object, ...] = ("maybe", 2, -1, 1.0, [], {})


@pytest.mark.parametrize("field", modelslab.FLAGS)
def test_every_flag_reads_the_same_way(field: str) -> None:
    for value in TRUE_VALUES:
        assert modelslab.flag({field: value}, field) is True, value
    for value in FALSE_VALUES:
        assert modelslab.flag({field: value}, field) is False, value
    assert modelslab.flag({}, field) is False
    for value in BAD_VALUES:
        with pytest.raises(InvalidField, match=f"{field} must be true or false"):
            modelslab.flag({field: value}, field)


@pytest.mark.parametrize("field", modelslab.FLAGS)
def test_a_bad_flag_is_refused_at_submit(field: str) -> None:
    with pytest.raises(InvalidField, match=f"{field} must be true or false"):
        modelslab.job_fields({"prompt": "x", field: "maybe"})


@pytest.mark.parametrize("sent", [True, "yes", 1, "1", "true"])
def test_safety_checker_asked_every_way_is_asked(sent: object) -> None:
    assert modelslab.job_fields({"prompt": "x", "safety_checker": sent}, safety_checker_available=True)[
        "safety_checker"
    ] is True


def status_of(body: dict[str, Any], state: JobState = JobState.IN_QUEUE) -> JobStatus:
    job = Job(id="123", owner="o", prompt="p", width=64, height=64, dialect="modelslab",
              client_input={k: v for k, v in body.items() if k != "key"})
    status = queued_status(job, 1000.0)
    if state is JobState.COMPLETED:
        return status.model_copy(update={"state": state, "started_at": 1000.0, "finished_at": 1001.0, "seeds": [3]})
    return status


@pytest.mark.parametrize("track_id", [42, "order-42", 0])
@pytest.mark.parametrize("state", [JobState.IN_QUEUE, JobState.COMPLETED])
@pytest.mark.parametrize("webhook", [False, True])
def test_track_id_comes_back_as_sent(track_id: object, state: JobState, webhook: bool) -> None:
    body = {"prompt": "p", "track_id": track_id}
    modelslab.job_fields(body)
    rendered = modelslab.render(status_of(body, state), ["u"], None, "f", webhook=webhook)
    assert rendered["track_id"] == track_id and type(rendered["track_id"]) is type(track_id)


def test_no_track_id_none_echoed_and_bad_ones_refused() -> None:
    assert "track_id" not in modelslab.render(status_of({"prompt": "p", "track_id": None}), ["u"], None, "f")
    for bad in (True, [1], {"a": 1}, 1.5):
        with pytest.raises(InvalidField, match="track_id must be a string or an integer"):
            modelslab.job_fields({"prompt": "p", "track_id": bad})
    # The webhook record carries a string track_id (logs, dead letters); an integer one comes from the request.
    assert modelslab.webhook_track_id({"track_id": "t"}) == "t"
    assert modelslab.webhook_track_id({"track_id": 7}) is None


def test_enhance_prompt_and_style_are_accepted_and_said_not_applied() -> None:
    body = {"prompt": "p", "enhance_prompt": "yes", "enhance_style": "cinematic"}
    assert modelslab.job_fields(body)["prompt"] == "p"  # the prompt runs as sent
    meta = modelslab.render(status_of(body, JobState.COMPLETED), ["u"], None, "f")["meta"]
    assert meta["enhance_prompt"] == "no" and meta["enhance_style"] is None
    assert meta["note"] == modelslab.NOT_APPLIED_NOTE
    plain = modelslab.render(status_of({"prompt": "p"}, JobState.COMPLETED), ["u"], None, "f")["meta"]
    assert "note" not in plain
    with pytest.raises(InvalidField, match="enhance_style must be a string"):
        modelslab.job_fields({"prompt": "p", "enhance_style": 3})


# --- through the API ----------------------------------------------------------------------------------------


def text2img(stack: Stack, **fields: Any) -> dict[str, Any]:
    body = {"key": stack.key, "prompt": "a fox", **SMALL, **fields}
    answer = httpx.post(f"{stack.base_url}/api/v6/realtime/text2img", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


@pytest.mark.parametrize("no", ["no", 0, "false", False])
def test_base64_no_answers_urls(stack: Stack, no: object) -> None:
    answer = text2img(stack, base64=no)
    assert answer["status"] == "success" and answer["output"][0].startswith("http")


@pytest.mark.parametrize("yes", ["yes", 1, "true", True])
def test_base64_yes_answers_images(stack: Stack, yes: object) -> None:
    answer = text2img(stack, base64=yes)
    assert answer["status"] == "success" and base64.b64decode(answer["output"][0]).startswith(b"\x89PNG")
    fetched = httpx.post(f"{stack.base_url}/api/v6/realtime/fetch/{answer['id']}", json={"key": stack.key}).json()
    assert fetched["output"] == answer["output"]  # fetch reads the same flag the same way


def test_instant_response_every_way(stack: Stack) -> None:
    assert text2img(stack, instant_response="no")["status"] == "success"
    queued = text2img(stack, instant_response=1, num_inference_steps=40, track_id=99)
    assert queued["status"] == "processing" and queued["track_id"] == 99
    fetched = httpx.post(f"{stack.base_url}/api/v6/realtime/fetch/{queued['id']}", json={"key": stack.key}).json()
    assert fetched["track_id"] == 99


@pytest.fixture(scope="module")
def dispatcher(stack: Stack) -> Iterator[EaselProcess]:
    process = stack.start_dispatcher("webhooks-flags")
    process.wait_for_output("webhook dispatcher ready")
    yield process
    process.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.stop()


async def test_an_integer_track_id_comes_back_an_integer_in_the_webhook(
    stack: Stack, dispatcher: EaselProcess, receiver: Receiver
) -> None:
    body = {"key": stack.key, "prompt": "a fox", **SMALL, "webhook": receiver.url("int"), "track_id": 4242,
            "enhance_prompt": "no"}
    async with httpx.AsyncClient(timeout=60) as client:
        answer = (await client.post(f"{stack.base_url}/api/v6/realtime/text2img", json=body)).json()
    assert answer["track_id"] == 4242
    [got] = await receiver.wait_for("int", 1)
    delivered = json.loads(got.body)
    Webhook(WEBHOOK_SECRET).verify(got.body, got.headers)
    assert delivered["status"] == "success" and delivered["id"] == answer["id"]
    assert delivered["track_id"] == 4242 and isinstance(delivered["track_id"], int)
