"""The stock A1111 client, `webuiapi`, unchanged against Easel: HTTP Basic with an Easel key as the password."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import webuiapi

from tests.processes import Stack
from tests.webui_client import webui_client


@pytest.fixture
def api(stack: Stack) -> Iterator[webuiapi.WebUIApi]:
    with webui_client(stack) as client:
        yield client


def test_txt2img_answers_images_info_and_parameters(api: webuiapi.WebUIApi) -> None:
    result = api.txt2img(prompt="a (lighthouse:1.2) at dusk", width=64, height=64, steps=2, seed=5)
    [image] = result.images
    assert image.size == (64, 64)
    assert result.info["all_seeds"] == [5] and result.info["sampler_name"] == "Euler a"
    assert result.parameters["steps"] == 2 and result.parameters["prompt"] == "a (lighthouse:1.2) at dusk"


def test_a_wrong_password_is_401_to_the_client(stack: Stack) -> None:
    with webui_client(stack, password="not-a-key") as client, pytest.raises(RuntimeError) as error:
        client.txt2img(prompt="x", width=64, height=64, steps=1)
    assert error.value.args[0] == 401


def test_catalogues_progress_and_options(api: webuiapi.WebUIApi) -> None:
    assert {"Euler a", "DPM++ 2M", "DPM++ SDE"} <= {s["name"] for s in api.get_samplers()}
    assert api.get_sd_models()[0]["model_name"] == api.get_options()["sd_model_checkpoint"]
    progress = api.get_progress()
    assert {"progress", "eta_relative", "state", "current_image"} <= set(progress)


def test_interrupt_ends_a_running_txt2img_which_returns_without_raising(api: webuiapi.WebUIApi) -> None:
    results: list[webuiapi.WebUIApiResult] = []
    call = threading.Thread(
        target=lambda: results.append(api.txt2img(prompt="a long job", width=256, height=256, steps=150))
    )
    call.start()
    deadline = time.monotonic() + 120
    while api.get_progress()["state"]["sampling_step"] < 1:
        assert call.is_alive() and time.monotonic() < deadline
        time.sleep(0.2)
    assert api.interrupt() == {}
    call.join(120)
    [result] = results  # the thread's txt2img returned: no RuntimeError
    # As A1111: the image it had when it stopped (its latents then, decoded), not an error.
    assert len(result.images) == 1 and result.image.size == (256, 256) and result.parameters["steps"] == 150
    assert api.get_progress()["state"]["interrupted"] is True
