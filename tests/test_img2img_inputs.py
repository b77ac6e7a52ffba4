"""Refused input images: each a clear 4xx in the dialect's own shape naming the field as the client sent it, and
nothing stored in the blob folder.

An API of its own (no runner: nothing here runs), with no network allow-listed (the SSRF rules as shipped) and a
small byte cap, so the body cap that follows from it is small too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from contract.settings import Settings
from easel.local_kafka import LocalKafka
from service.requests import MAX_BODY_BYTES, image_body_bytes
from tests.img2img_inputs import b64, bomb_png, mask_png, png, stored_files
from tests.processes import HOME, Stack, make_stack

MAX_IMAGE_BYTES = 200_000
Body = dict[str, Any]


@pytest.fixture(scope="module")
def api(kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(kafka.bootstrap, tmp_path_factory.mktemp("inputs"), "inputs", HOME)
    stack.env |= {"EASEL_WEBHOOK_ALLOW_NETWORKS": "", "EASEL_MAX_INPUT_IMAGE_BYTES": str(MAX_IMAGE_BYTES)}
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


# Each dialect: (route, the request carrying `init` (and `mask`, when given), the field as its client names it,
# the status it answers, the problem's text from its body).
def native(init: object, mask: object = None) -> Body:
    return {"prompt": "x", "width": 64, "height": 64, "init_image": init} | ({"mask_image": mask} if mask else {})


def a1111(init: object, mask: object = None) -> Body:
    return {"prompt": "x", "width": 64, "height": 64, "init_images": [init], "inpainting_fill": 1} | (
        {"mask": mask} if mask else {})


def modelslab(init: object, mask: object = None) -> Body:
    return {"prompt": "x", "width": 64, "height": 64, "init_image": init} | ({"mask_image": mask} if mask else {})


def runpod(init: object, mask: object = None) -> Body:
    payload = a1111(init, mask)
    return {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"}, "payload": payload}}


def native_problem(body: Body) -> str:
    return f"{body['error']['field']}: {body['error']['message'].split(': ', 1)[1]}"


def a1111_problem(body: Body) -> str:
    [detail] = body["detail"]
    return f"{detail['loc'][1]}: {detail['msg']}"


def modelslab_problem(body: Body) -> str:
    assert body["status"] == "error" and set(body) == {"status", "message"}
    return str(body["message"])


def runpod_problem(body: Body) -> str:
    assert set(body) == {"error"}
    return str(body["error"])


DIALECTS: dict[str, tuple[str, Callable[..., Body], str, str, int, Callable[[Body], str]]] = {
    # name: (route, request, init's name, mask's name, status, the problem)
    "native": ("/v1/jobs", native, "init_image", "mask_image", 422, native_problem),
    "a1111": ("/sdapi/v1/img2img", a1111, "init_images[0]", "mask", 422, a1111_problem),
    "modelslab-img2img": ("/api/v6/realtime/img2img", modelslab, "init_image", "mask_image", 400, modelslab_problem),
    "modelslab-inpaint": ("/api/v6/realtime/inpaint", modelslab, "init_image", "mask_image", 400, modelslab_problem),
    "runpod": ("/v2/ep/run", runpod, "input.payload.init_images[0]", "input.payload.mask", 400, runpod_problem),
}
GOOD = b64(png(64, 64))
BAD_INITS: dict[str, tuple[object, str]] = {
    "a 20000² bomb": (b64(bomb_png()), "at most 16777216"),
    "not an image": (b64(b"hello, I am text"), "is not a PNG, JPEG, WEBP image"),
    "not base64": ("%%% nope %%%", "is neither base64 nor an http(s) URL"),
    "a number": (42, "must be an image as base64"),
    "over the byte cap": (b64(b"\x89PNG" + b"\x00" * MAX_IMAGE_BYTES), f"at most {MAX_IMAGE_BYTES} are accepted"),
    "a loopback URL": ("http://127.0.0.1:1/x.png", "not allowed: 127.0.0.1 is a loopback address"),
    "the metadata address": ("http://169.254.169.254/latest/meta-data", "not allowed: 169.254.169.254 is a link-local"),
    "a name of a private address": ("http://localhost:1/x.png", "not allowed: localhost resolves to"),
    "another scheme": ("file:///etc/passwd", "is neither base64 nor an http(s) URL"),
}


def post(api: Stack, route: str, body: Body) -> httpx.Response:
    if route.startswith("/api/v6"):
        body = {**body, "key": api.key}
    return httpx.post(f"{api.base_url}{route}", json=body, headers={"Authorization": f"Bearer {api.key}"},
                      timeout=30)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("case", BAD_INITS)
def test_a_bad_init_image_is_refused_naming_it_and_nothing_is_stored(api: Stack, dialect: str, case: str) -> None:
    route, request, init_name, _, status, problem = DIALECTS[dialect]
    sent, rule = BAD_INITS[case]
    mask = b64(mask_png(64, 64)) if "inpaint" in route else None
    answer = post(api, route, request(sent, mask))
    assert answer.status_code == status, answer.text
    assert problem(answer.json()).startswith(f"{init_name}: "), answer.text
    assert rule in problem(answer.json()), answer.text
    assert stored_files(api) == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_mask_of_another_size_is_refused_naming_the_mask(api: Stack, dialect: str) -> None:
    route, request, _, mask_name, status, problem = DIALECTS[dialect]
    if route.endswith("/img2img") and dialect.startswith("modelslab"):
        route = "/api/v6/realtime/inpaint"
    answer = post(api, route, request(GOOD, b64(mask_png(32, 64))))
    assert answer.status_code == status, answer.text
    assert problem(answer.json()) == f"{mask_name}: is 32×64; it must be the init image's size, 64×64", answer.text
    assert stored_files(api) == []


def test_a1111_takes_exactly_one_init_image(api: Stack) -> None:
    for images in ([GOOD, GOOD], []):
        answer = post(api, "/sdapi/v1/img2img", {"prompt": "x", "init_images": images})
        assert answer.status_code == 422, answer.text
        assert a1111_problem(answer.json()) == f"init_images: must hold exactly one image; it holds {len(images)}"
    assert stored_files(api) == []


@pytest.mark.parametrize(("change", "field", "rule"), [
    ({"inpainting_fill": 2}, "inpainting_fill", "only 0 (fill) and 1 (original) are supported"),
    ({"resize_mode": 1}, "resize_mode", "only 0 (just resize) is supported"),
    ({"include_init_images": True}, "include_init_images", "never carries the input images back"),
    ({"denoising_strength": 0}, "denoising_strength", "greater than 0"),
    ({"refiner_checkpoint": "refiner"}, "refiner_checkpoint", "no refiner is configured"),
])
def test_a1111_refuses_what_diffusers_does_otherwise_by_name(
    api: Stack, change: dict[str, Any], field: str, rule: str
) -> None:
    answer = post(api, "/sdapi/v1/img2img", {**a1111(GOOD, b64(mask_png(64, 64))), **change})
    assert answer.status_code in (404, 422), answer.text
    assert a1111_problem(answer.json()).startswith(f"{field}: ") and rule in answer.text, answer.text
    assert stored_files(api) == []


def test_modelslab_needs_its_images_and_refuses_them_on_text2img(api: Stack) -> None:
    answer = post(api, "/api/v6/realtime/inpaint", {"prompt": "x", "init_image": GOOD})
    assert (answer.status_code, answer.json()["message"]) == (400, "mask_image is required")
    answer = post(api, "/api/v6/realtime/text2img", {"prompt": "x", "init_image": GOOD})
    assert (answer.status_code, answer.json()["message"]) == (400, "init_image: is not a known field")
    answer = post(api, "/api/v6/realtime/text2img", {"prompt": "x", "lora_model": "a,b", "lora_strength": "1,2,3"})
    assert answer.json()["message"] == "lora_strength must hold one weight, or one per LoRA (2)"
    assert stored_files(api) == []


def test_the_body_cap_follows_from_the_image_cap(api: Stack) -> None:
    cap = image_body_bytes(Settings.from_env(api.env))
    assert cap == 2 * 266_668 + MAX_BODY_BYTES  # two images of EASEL_MAX_INPUT_IMAGE_BYTES as base64, plus 1 MiB
    for route, body in (("/v1/jobs", native("A" * cap)), ("/sdapi/v1/img2img", a1111("A" * cap)),
                        ("/api/v6/realtime/img2img", modelslab("A" * cap)), ("/v2/ep/run", runpod("A" * cap))):
        assert post(api, route, body).status_code == 413, route
    # Routes that take no image keep the 1 MiB cap.
    assert post(api, "/sdapi/v1/txt2img", {"prompt": "x", "comments": "A" * MAX_BODY_BYTES}).status_code == 413
    assert stored_files(api) == []
