"""Skidio answers JSON (images as base64, with the job id, seeds and URLs); the raw PNG only for Accept: image/png."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from contract.errors import UnknownName
from contract.job import Job
from contract.lifecycle import queued_status
from contract.states import JobState
from dialects import skidio
from tests.processes import Stack

SMALL = {"width": 64, "height": 64, "steps": 3}


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize(
    ("accept", "png"),
    [
        ("", False),
        ("*/*", False),  # what requests, curl and fetch() send
        ("application/json", False),
        ("image/png", True),
        ("image/*", True),
        ("IMAGE/PNG", True),
        ("image/png, application/json", False),  # a tie answers JSON
        ("image/png;q=1, application/json;q=0.5", True),
        ("application/json;q=0.1, image/png", True),
        ("text/html, */*;q=0.8", False),
        ("image/png;q=0", False),
        ("image/png;q=oops", False),
    ],
)
def test_png_only_when_the_accept_header_prefers_it(accept: str, png: bool) -> None:
    assert skidio.wants_png(accept) is png


def test_render_has_images_urls_and_seeds_once_completed() -> None:
    status = queued_status(Job(id="j1", owner="o", prompt="p", num_images=2), 1.0)
    assert skidio.render(status, [], []) == {"job_id": "j1", "status": "IN_QUEUE"}
    done = status.model_copy(update={"state": JobState.COMPLETED, "seeds": [4, 5]})
    assert skidio.render(done, ["u0", "u1"], ["i0", "i1"]) == {
        "job_id": "j1", "status": "COMPLETED", "images": ["i0", "i1"], "urls": ["u0", "u1"], "seeds": [4, 5],
    }


def test_model_is_sdxl_or_a_served_name_and_unknown_ones_list_them() -> None:
    body = {"input": {"api_key": "k"}, "prompt": "p"}
    served = ("sd_xl_base_1.0", "default")
    assert "model" not in skidio.job_fields({**body, "model": "sdxl"}, served)
    assert skidio.job_fields({**body, "model": "sd_xl_base_1.0"}, served)["model"] == "sd_xl_base_1.0"
    with pytest.raises(UnknownName, match=r"must be one of: sdxl, sd_xl_base_1\.0, default"):
        skidio.job_fields({**body, "model": "flux-dev"}, served)


def test_sync_answers_json_with_every_image(stack: Stack) -> None:
    body = {"input": {"api_key": stack.key}, "prompt": "two foxes", **SMALL, "batch_size": 2, "seed": 11}
    answer = httpx.post(f"{stack.base_url}/api/txt2img", json=body, timeout=100)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    result = answer.json()
    assert result["status"] == "COMPLETED" and result["seeds"] == [11, 12]
    assert [png_size(base64.b64decode(image)) for image in result["images"]] == [(64, 64), (64, 64)]
    assert [httpx.get(url).content for url in result["urls"]] == [base64.b64decode(i) for i in result["images"]]

    status = httpx.post(f"{stack.base_url}/api/txt2img/status",
                        json={"input": {"api_key": stack.key, "job_id": result["job_id"]}})
    assert status.json() == result  # the status of a completed job is the same answer


def test_sync_answers_the_raw_png_to_who_asks_for_it(stack: Stack) -> None:
    body = {"input": {"api_key": stack.key}, "prompt": "a fox", **SMALL, "batch_size": 2}
    answer = httpx.post(f"{stack.base_url}/api/txt2img", json=body, headers={"Accept": "image/png"}, timeout=100)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert png_size(answer.content) == (64, 64)
    assert answer.headers["x-job-id"] and answer.headers["x-image-count"] == "2"
