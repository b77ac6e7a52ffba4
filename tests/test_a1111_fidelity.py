"""AUTOMATIC1111 as its clients expect it: HTTP Basic (`--api-auth`), lax types, refusals by name, `parameters`
that report what ran, the real model name, `send_images`, and an interrupted txt2img answering 200."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from contract.errors import InvalidField, SettingsError, Unauthorized
from contract.job import JobSpec
from contract.states import JobState, JobStatus
from dialects import a1111
from easel.local_kafka import LocalKafka
from service.auth import ApiKeys
from tests.processes import Stack
from tests.sdxl_named_stack import BASE_NAME, SEED_001_PAYLOAD, sdxl_named_stack

SMALL = {"width": 64, "height": 64, "steps": 2}


def status_of(state: JobState, spec: dict[str, Any], seeds: list[int] | None = None) -> JobStatus:
    return JobStatus(job_id="j", owner="o", state=state, seq=3, updated_at=2.0, created_at=1.0, spec=spec,
                     seeds=seeds or [], error="cancelled by request" if state is JobState.CANCELLED else None)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request_with(authorization: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": b"",
                    "headers": [(b"authorization", authorization.encode())]})


# --- the dialect as pure functions -----------------------------------------------------------------


def test_numeric_strings_and_flag_strings_are_taken_as_a1111s_pydantic_takes_them() -> None:
    fields = a1111.job_fields(
        {"prompt": "x", "batch_size": "1", "n_iter": "2", "steps": "20", "cfg_scale": "7.5", "width": "64",
         "seed": "42", "restore_faces": "false", "send_images": "true"},
        ("default",),
    )
    assert (fields["num_images"], fields["steps"], fields["guidance"], fields["width"], fields["seed"]) == (
        2, 20, 7.5, 64, 42)


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"batch_size": "one"}, "batch_size"), ({"steps": 2.5}, "steps"), ({"cfg_scale": [7]}, "cfg_scale"),
     ({"override_settings": "sdxl"}, "override_settings"), ({"styles": "anime"}, "styles")],
)
def test_values_a1111_would_refuse_are_422_naming_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidField) as error:
        a1111.job_fields({"prompt": "x", **payload}, ("default",))
    assert error.value.field == field
    status, body = a1111.error_answer(error.value)
    assert status == 422 and body["detail"][0]["loc"] == ["body", field]


def test_an_empty_prompt_is_a_job() -> None:
    assert JobSpec(**a1111.job_fields({"prompt": ""}, ("default",))).prompt == ""
    assert JobSpec(**a1111.job_fields({}, ("default",))).prompt == ""


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"alwayson_scripts": {"ControlNet": {"args": []}}}, "alwayson_scripts"),
        ({"script_name": "x/y/z plot"}, "script_name"),
        ({"styles": ["cinematic"]}, "styles"),
        ({"override_settings": {"sd_vae": "vae-ft-mse-840000.safetensors"}}, "override_settings.sd_vae"),
        ({"subseed_strength": 0.3}, "subseed_strength"),
        ({"tiling": True}, "tiling"),
    ],
)
def test_features_easel_does_not_have_are_refused_naming_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidField) as error:
        a1111.job_fields({"prompt": "x", **payload}, ("default",))
    assert error.value.field == field
    status, body = a1111.error_answer(error.value)
    assert status == 422 and body["detail"][0]["loc"] == ["body", *field.split(".")]
    assert body["detail"][0]["msg"] == error.value.rule


@pytest.mark.parametrize(
    "payload",
    [{"alwayson_scripts": {}}, {"script_name": None}, {"script_name": ""}, {"styles": []}, {"styles": None},
     {"override_settings": {"sd_vae": "Automatic"}}, {"override_settings": {"sd_vae": "None"}},
     {"override_settings": {"sd_vae": "sdxl_vae.safetensors"}}, {"override_settings": None}],
)
def test_empty_or_built_in_choices_are_accepted(payload: dict[str, Any]) -> None:
    assert a1111.job_fields({"prompt": "x", **payload}, ("default",))["prompt"] == "x"


def test_parameters_report_the_steps_and_sampler_that_ran_not_upstream_defaults() -> None:
    # The RunPod worker's defaults ran (steps 20, Euler a); the client sent neither.
    spec = {"prompt": "x", "steps": 20, "guidance": 7.0, "width": 512, "height": 512, "sampler": "Euler a",
            "schedule": "automatic", "model": "default"}
    body = a1111.txt2img_response(status_of(JobState.COMPLETED, spec, [5]), ["aW1n"], {"prompt": "x"}, "sd_xl")
    assert body["parameters"]["steps"] == 20 and body["parameters"]["sampler_index"] == "Euler a"
    assert body["parameters"]["cfg_scale"] == 7.0 and body["parameters"]["batch_size"] == 1
    sent = a1111.txt2img_response(status_of(JobState.COMPLETED, spec, [5]), [], {"prompt": "x", "batch_size": "1"})
    assert sent["parameters"]["batch_size"] == 1  # as A1111's pydantic hands it back: coerced


def test_info_and_infotexts_name_the_configured_model() -> None:
    spec = {"prompt": "x", "steps": 2, "guidance": 7.0, "width": 64, "height": 64, "sampler": "Euler",
            "schedule": "automatic", "model": "default"}
    info = json.loads(a1111.info(status_of(JobState.COMPLETED, spec, [5]), "sd_xl_base_1.0"))
    assert info["sd_model_name"] == "sd_xl_base_1.0" and "Model: sd_xl_base_1.0" in info["infotexts"][0]
    named = json.loads(a1111.info(status_of(JobState.COMPLETED, {**spec, "model": "other"}, [5]), "sd_xl_base_1.0"))
    assert named["sd_model_name"] == "other"


def test_send_images_false_answers_no_images() -> None:
    spec = {"prompt": "x", "steps": 2, "model": "default"}
    body = a1111.txt2img_response(status_of(JobState.COMPLETED, spec, [5]), ["aW1n"], {"send_images": False})
    assert body["images"] == [] and json.loads(body["info"])["all_seeds"] == [5]


def test_an_interrupted_job_answers_200_with_what_it_has_and_other_endings_do_not() -> None:
    spec = {"prompt": "x", "steps": 30, "seed": 9, "model": "default"}
    code, body = a1111.txt2img_answer(status_of(JobState.CANCELLED, spec), [], {"prompt": "x"})
    assert code == 200 and body["images"] == [] and json.loads(body["info"])["all_seeds"] == [9]
    assert a1111.txt2img_answer(status_of(JobState.CANCELLED, spec, [9]), ["aW1n"], {})[1]["images"] == ["aW1n"]
    assert a1111.txt2img_answer(status_of(JobState.FAILED, spec), [], {})[0] == 500
    assert a1111.txt2img_answer(status_of(JobState.TIMED_OUT, spec), [], {})[0] == 409


def test_basic_auth_takes_any_user_with_a_key_unless_pairs_restrict_the_users() -> None:
    open_keys = ApiKeys(["k1", "k2"])
    assert open_keys.authenticate(request_with(basic("anyone", "k1")), basic=True)
    with pytest.raises(Unauthorized) as wrong:
        open_keys.authenticate(request_with(basic("anyone", "nope")), basic=True)
    assert wrong.value.headers == {"WWW-Authenticate": 'Basic realm="easel"'}
    with pytest.raises(Unauthorized):  # Basic is for A1111's routes only
        open_keys.authenticate(request_with(basic("anyone", "k1")))

    pairs = ApiKeys(["k1", "k2"], basic_users=["alice:k1"])
    assert pairs.authenticate(request_with(basic("alice", "k1")), basic=True)
    for user, key in (("bob", "k1"), ("alice", "k2")):
        with pytest.raises(Unauthorized):
            pairs.authenticate(request_with(basic(user, key)), basic=True)
    assert pairs.authenticate(request_with("Bearer k2"), basic=True)  # other presentations keep working
    with pytest.raises(Unauthorized):
        pairs.authenticate(request_with("Basic !!!"), basic=True)


@pytest.mark.parametrize("pair", ["alice", ":k1", "alice:unknown"])
def test_a1111_auth_pairs_must_name_a_user_and_a_configured_key(pair: str) -> None:
    with pytest.raises(SettingsError):
        ApiKeys(["k1"], basic_users=[pair])


# --- end to end, on the session stack ---------------------------------------------------------------


def test_basic_auth_lax_types_and_send_images_end_to_end(stack: Stack) -> None:
    url = f"{stack.base_url}/sdapi/v1/txt2img"
    payload = {"prompt": "", **SMALL, "batch_size": "1", "cfg_scale": "6.5", "seed": 3}
    answer = httpx.post(url, json=payload, auth=("whoever", stack.key), timeout=100)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["images"]) == 1 and body["parameters"]["batch_size"] == 1 and body["parameters"]["prompt"] == ""
    assert json.loads(body["info"])["cfg_scale"] == 6.5

    unsent = httpx.post(url, json={**payload, "send_images": False}, auth=("whoever", stack.key), timeout=100)
    assert unsent.status_code == 200 and unsent.json()["images"] == []

    wrong = httpx.post(url, json=payload, auth=("whoever", "not-a-key"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Basic")
    assert wrong.json()["error"] == "HTTPException"
    refused = httpx.post(url, json={**payload, "alwayson_scripts": {"ADetailer": {"args": [True]}}},
                         auth=("whoever", stack.key))
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "alwayson_scripts"]


def test_parameters_without_steps_report_the_steps_that_ran(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    body = {"input": {"prompt": "x", "width": 64, "height": 64, "cfg_scale": 7}}  # the RunPod worker: steps 20
    answer = httpx.post(f"{stack.base_url}/v2/ep/runsync", json=body, headers=headers, timeout=100).json()
    assert answer["status"] == "COMPLETED", answer
    assert answer["output"]["parameters"]["steps"] == 20 == json.loads(answer["output"]["info"])["steps"]


# --- end to end, the tiny model under SDXL's names (seed 001) ---------------------------------------


@pytest.fixture(scope="module")
def sdxl_stack(kafka: LocalKafka, tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with sdxl_named_stack(kafka.bootstrap, tmp_path_factory.mktemp("a1111-sdxl"), "a1111-sdxl") as stack:
        yield stack


def test_info_names_the_model_the_catalog_serves(sdxl_stack: Stack) -> None:
    answer = httpx.post(f"{sdxl_stack.base_url}/sdapi/v1/txt2img", json={"prompt": "x", **SMALL},
                        auth=("u", sdxl_stack.key), timeout=100)
    info = json.loads(answer.json()["info"])
    assert info["sd_model_name"] == BASE_NAME and f"Model: {BASE_NAME}" in info["infotexts"][0]
    options = httpx.get(f"{sdxl_stack.base_url}/sdapi/v1/options", auth=("u", sdxl_stack.key)).json()
    assert options["sd_model_checkpoint"] == BASE_NAME


def test_seed_001_payload_verbatim_runs_and_an_interrupt_answers_200_with_the_envelope(sdxl_stack: Stack) -> None:
    """Seed 001's payload at 1024² with the refiner takes minutes on a CPU: it is interrupted once it runs."""
    answers: list[httpx.Response] = []
    call = threading.Thread(target=lambda: answers.append(httpx.post(
        f"{sdxl_stack.base_url}/sdapi/v1/txt2img", json=SEED_001_PAYLOAD, auth=("u", sdxl_stack.key), timeout=600)))
    call.start()
    deadline = time.monotonic() + 120
    while (progress := httpx.get(f"{sdxl_stack.base_url}/sdapi/v1/progress", auth=("u", sdxl_stack.key)).json())[
        "state"
    ]["sampling_step"] < 1:
        assert call.is_alive() and time.monotonic() < deadline, (answers[0].text if answers else progress)
        time.sleep(0.2)
    assert progress["state"]["sampling_steps"] >= 30  # base and refiner steps of one schedule
    assert httpx.post(f"{sdxl_stack.base_url}/sdapi/v1/interrupt", auth=("u", sdxl_stack.key)).json() == {}
    call.join(120)
    [answer] = answers
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"images", "parameters", "info"} and len(body["images"]) == 1  # the partial image
    assert body["parameters"]["refiner_checkpoint"] == "sd_xl_refiner_1.0" and body["parameters"]["steps"] == 30
    info = json.loads(body["info"])
    assert info["sd_model_name"] == BASE_NAME and info["width"] == 1024 and info["sampler_name"] == "DPM++ SDE"
