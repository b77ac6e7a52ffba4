"""Every seed document's examples, run verbatim against a stack configured exactly as a fresh `make run`.

The seeds' own code is read from tests/seeds (verbatim copies of shared/seeds) and run as written, with only the
service's address, a real key and (for a status check) the job id put in: cURL through bash, Python with `exec`
(real `requests` calls and the seed's own `.json()` handling), JavaScript in headless Chromium from a page served
on another origin, so the browser's CORS checks apply. Seed 001 is a request body: it is posted to the three
routes it is meant for. The stock ModelsLab SDK (modelslab-py) runs text2img too.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from easel.dev import DEMO_MODEL_NAME, DEMO_REFINER_NAME
from easel.local_kafka import LocalKafka
from tests.fresh_stack import fresh_stack
from tests.processes import Stack, free_port

# The seed documents, copied verbatim into the repository so that every checkout runs them; the originals live
# in the workspace's shared/seeds, and test_the_copies_are_the_seeds checks they have not drifted apart.
SEEDS = Path(__file__).resolve().parent / "seeds"
SHARED_SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")


@pytest.mark.skipif(not SHARED_SEEDS.exists(), reason="shared/seeds is not beside this checkout")
def test_the_copies_are_the_seeds() -> None:
    originals = sorted(SHARED_SEEDS.glob("*"))
    assert [p.name for p in originals] == sorted(p.name for p in SEEDS.glob("*"))
    assert all((SEEDS / p.name).read_bytes() == p.read_bytes() for p in originals)


# --- the seeds' examples -------------------------------------------------------------------------------------


def examples(seed: str, language: str) -> list[str]:
    """The seed's fenced code blocks in `language`, in document order, dedented (seed 003 indents them)."""
    text = next(SEEDS.glob(f"{seed}_*.txt")).read_text()
    return [textwrap.dedent(code) for lang, code in re.findall(r"```(\w+)[^\n]*\n(.*?)```", text, re.S)
            if lang == language]


def seed_000(stack: Stack, code: str) -> str:
    return code.replace("https://skidiolabs.com", stack.base_url).replace("your-api-key", stack.key)


def seed_003(stack: Stack, code: str, job_id: str = "") -> str:
    code = code.replace("https://api.runpod.ai", stack.base_url).replace("YOUR_API_KEY", stack.key)
    return code.replace("your-job-id", job_id).replace("JOB_ID", job_id)


def run_python(code: str) -> tuple[dict[str, Any], str]:
    """The example's globals after running it, and what it printed."""
    namespace: dict[str, Any] = {"__name__": "seed_example"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "<seed example>", "exec"), namespace)
    return namespace, printed.getvalue()


def run_curl(code: str) -> list[dict[str, Any]]:
    """Every JSON answer the example's curl commands printed, in order."""
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    decoder, answers, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(out, at)) < len(out):
        answer, at = decoder.raw_decode(out, at)
        answers.append(answer)
    return answers


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def is_png(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE)


def cancel(stack: Stack, job_id: str) -> None:
    """An example's queued job cancelled once checked, so the next example's sync call does not wait behind it."""
    httpx.post(f"{stack.base_url}/v1/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {stack.key}"})


def assert_skidio_completed(answer: dict[str, Any]) -> None:
    assert answer["status"] == "COMPLETED", answer
    assert len(answer["images"]) == len(answer["urls"]) == len(answer["seeds"]) == 1
    assert is_png(base64.b64decode(answer["images"][0]))
    assert is_png(httpx.get(answer["urls"][0]).content)


def assert_runpod_image_url(result: dict[str, Any]) -> None:
    assert result["status"] == "COMPLETED", result
    assert is_png(httpx.get(result["output"]["image_url"]).content)


# --- the stack ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(kafka: LocalKafka, tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fresh_stack(kafka.bootstrap, tmp_path_factory.mktemp("fresh"), f"fresh-{uuid.uuid4().hex[:8]}") as stack:
        yield stack


@pytest.fixture(autouse=True)
def idle_runner(demo: Stack) -> Iterator[None]:
    """Each example starts with an idle runner: what an earlier one left queued or running (an async example's job,
    a sync one that outlasted its wait) is cancelled. The demo has one runner on a CPU: SDXL sizes take a while."""
    yield
    auth = {"Authorization": f"Bearer {demo.key}"}
    for job in httpx.get(f"{demo.base_url}/v1/jobs", params={"limit": 100}, headers=auth).json()["jobs"]:
        if job["state"] in ("IN_QUEUE", "IN_PROGRESS"):
            cancel(demo, job["id"])


def test_the_demo_serves_sdxl_names_and_lists_them_for_unknown_ones(demo: Stack) -> None:
    auth = {"Authorization": f"Bearer {demo.key}"}
    models = httpx.get(f"{demo.base_url}/sdapi/v1/sd-models", headers=auth).json()
    assert DEMO_MODEL_NAME in [model["model_name"] for model in models]
    job = {"prompt": "a fox", "width": 64, "height": 64, "steps": 4, "model": DEMO_MODEL_NAME,
           "refiner": DEMO_REFINER_NAME}
    job_id = httpx.post(f"{demo.base_url}/v1/jobs", json=job, headers=auth).json()["id"]
    done = httpx.get(f"{demo.base_url}/v1/jobs/{job_id}", params={"wait": 60}, headers=auth, timeout=90).json()
    assert done["state"] == "COMPLETED", done

    unknown = httpx.post(f"{demo.base_url}/v1/jobs", json={**job, "model": "sd_xl_base_0.9"}, headers=auth)
    assert unknown.status_code == 422 and "must be one of: sd_xl_base_1.0, default" in unknown.text
    skidio = httpx.post(f"{demo.base_url}/api/txt2img/async",
                        json={"input": {"api_key": demo.key}, "prompt": "x", "model": "flux"})
    assert skidio.status_code == 400
    assert skidio.json() == {"error": "model: must be one of: sdxl, sd_xl_base_1.0, default"}


# --- seed 000: Skidio ------------------------------------------------------------------------------------


def test_seed_000_curl(demo: Stack) -> None:
    (curl,) = examples("000", "bash")
    sync, queued = run_curl(seed_000(demo, curl))
    cancel(demo, queued["job_id"])
    assert_skidio_completed(sync)
    assert queued["status"] == "IN_QUEUE" and queued["job_id"]


def test_seed_000_python(demo: Stack) -> None:
    (python,) = examples("000", "python")
    namespace, _ = run_python(seed_000(demo, python))
    cancel(demo, namespace["async_response"]["job_id"])
    assert_skidio_completed(namespace["sync_response"])
    assert namespace["async_response"]["status"] == "IN_QUEUE"


# --- seed 001: the RunPod A1111 worker payload ----------------------------------------------------------------


def seed_001_request() -> dict[str, Any]:
    (request, *_) = examples("001", "json")
    body: dict[str, Any] = json.loads(request)
    return body


def test_seed_001_on_runsync_answers_images_info_and_parameters(demo: Stack) -> None:
    headers = {"Authorization": f"Bearer {demo.key}"}
    answer = httpx.post(f"{demo.base_url}/v2/a1111-worker/runsync", json=seed_001_request(), headers=headers,
                        timeout=900).json()
    # 1024², 30 steps with the refiner can outlast runsync's window on a CPU: then, as RunPod documents it, the
    # answer says IN_PROGRESS and the client polls /status with the id it got.
    deadline = time.monotonic() + 900
    while answer["status"] in {"IN_QUEUE", "IN_PROGRESS"} and time.monotonic() < deadline:
        time.sleep(1)
        answer = httpx.get(f"{demo.base_url}/v2/a1111-worker/status/{answer['id']}", headers=headers).json()
    assert answer["status"] == "COMPLETED", answer
    assert isinstance(answer["delayTime"], int) and isinstance(answer["executionTime"], int)
    output = answer["output"]
    assert len(output["images"]) == 1 and is_png(base64.b64decode(output["images"][0]))
    info = json.loads(output["info"])
    assert info["prompt"] == "an astronaut riding a horse" and len(info["all_seeds"]) == 1
    assert output["parameters"]["prompt"] == "an astronaut riding a horse"


def test_seed_001_on_run_is_queued(demo: Stack) -> None:
    answer = httpx.post(f"{demo.base_url}/v2/a1111-worker/run", json=seed_001_request(),
                        headers={"Authorization": f"Bearer {demo.key}"})
    assert answer.status_code == 200, answer.text
    cancel(demo, answer.json()["id"])
    assert answer.json()["status"] == "IN_QUEUE" and set(answer.json()) == {"id", "status"}


def test_seed_001_payload_on_sdapi_txt2img(demo: Stack) -> None:
    payload = seed_001_request()["input"]["payload"]
    answer = httpx.post(f"{demo.base_url}/sdapi/v1/txt2img", json=payload,
                        headers={"Authorization": f"Bearer {demo.key}"}, timeout=900)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["images"]) == 1 and is_png(base64.b64decode(body["images"][0]))
    assert json.loads(body["info"])["prompt"] == "an astronaut riding a horse"


# --- seed 002: ModelsLab -------------------------------------------------------------------------------------


def test_seed_002_body(demo: Stack) -> None:
    (body,) = examples("002", "json")
    answer = httpx.post(f"{demo.base_url}/api/v6/realtime/text2img",
                        content=body.replace("your_api_key", demo.key),
                        headers={"Content-Type": "application/json"}, timeout=60).json()
    while answer["status"] == "processing":  # the seed's documented union: poll fetch_result until success
        answer = httpx.post(answer["fetch_result"], json={"key": demo.key}).json()
    assert answer["status"] == "success", answer
    assert isinstance(answer["id"], int) and len(answer["output"]) == 1
    assert is_png(httpx.get(answer["output"][0]).content)


def test_the_stock_modelslab_sdk_text2img(demo: Stack) -> None:
    from modelslab_py.core.apis.realtime import Realtime
    from modelslab_py.core.client import Client
    from modelslab_py.schemas.realtime import RealtimeText2ImageSchema

    client = Client(api_key=demo.key, fetch_retry=300, fetch_timeout=1)
    client.base_url = f"{demo.base_url}/api/"  # no constructor option: the SDK's public attribute, set before use
    realtime = Realtime(client=client)
    with contextlib.redirect_stdout(io.StringIO()):  # the SDK prints every answer
        answer = realtime.text_to_image(
            RealtimeText2ImageSchema(prompt="a lighthouse", width=256, height=256, samples=1, num_inference_steps=4)
        )
        if answer["status"] == "processing":  # the SDK's own way on: fetch(id), polling until success
            answer = realtime.fetch(str(answer["id"]))
    assert answer["status"] == "success", answer
    assert is_png(httpx.get(answer["output"][0]).content)


# --- seed 003: RunPod public endpoints ------------------------------------------------------------------------


def test_seed_003_curl(demo: Stack) -> None:
    runsync, run, status = examples("003", "bash")
    (answer,) = run_curl(seed_003(demo, runsync))
    assert_runpod_image_url(answer)
    (queued,) = run_curl(seed_003(demo, run))
    assert queued["status"] == "IN_QUEUE"
    (checked,) = run_curl(seed_003(demo, status, queued["id"]))
    cancel(demo, queued["id"])
    assert checked["id"] == queued["id"] and checked["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")


def test_seed_003_python(demo: Stack) -> None:
    runsync, run, status = examples("003", "python")
    namespace, printed = run_python(seed_003(demo, runsync))
    assert_runpod_image_url(namespace["result"])
    assert printed.strip() == namespace["result"]["output"]["image_url"]

    namespace, printed = run_python(seed_003(demo, run))
    job_id = namespace["job_id"]
    assert printed.strip() == f"Job submitted: {job_id}"

    namespace, printed = run_python(seed_003(demo, status, job_id))
    assert_runpod_image_url(namespace["result"])
    assert printed.splitlines()[-1] == namespace["result"]["output"]["image_url"]


# --- the JavaScript examples, from a page on another origin ---------------------------------------------------


class _BlankPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        page = b"<!doctype html><title>another origin</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def other_origin() -> Iterator[str]:
    """A page's address on another origin than the API's (another port): its fetches are cross-origin."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _BlankPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class Console:
    """What the page logs: each console.log's arguments as JSON values; console errors and page errors apart."""

    def __init__(self) -> None:
        self.logs: list[list[Any]] = []
        self.errors: list[str] = []

    async def on_message(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)
        else:
            self.logs.append([await arg.json_value() for arg in message.args])

    async def wait_for(self, page: Any, first: Any, count: int = 1) -> list[list[Any]]:
        """The logs whose first argument is `first` (or starts with it), once there are `count` of them."""
        for _ in range(600):
            found = [log for log in self.logs if log and _matches(log[0], first)]
            if len(found) >= count or self.errors:
                assert self.errors == [], self.errors
                return found
            await page.wait_for_timeout(500)
        raise AssertionError(f"no console.log {first!r}: {self.logs}")


def _matches(value: Any, first: Any) -> bool:
    return value == first or (isinstance(value, str) and isinstance(first, str) and value.startswith(first))


@contextlib.asynccontextmanager
async def browser_page(origin: str) -> Any:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page()
            console = Console()
            page.on("console", console.on_message)
            page.on("pageerror", lambda error: console.errors.append(str(error)))
            await page.goto(origin)
            yield page, console
        finally:
            await browser.close()


@needs_chromium
async def test_seed_000_javascript_from_another_origin(demo: Stack, other_origin: str) -> None:
    assert not other_origin.startswith(demo.base_url)
    (javascript,) = examples("000", "javascript")
    async with browser_page(other_origin) as (page, console):
        await page.add_script_tag(content=seed_000(demo, javascript))
        ((_, sync),) = await console.wait_for(page, "Sync:")
        ((_, queued),) = await console.wait_for(page, "Async:")
    cancel(demo, queued["job_id"])
    assert_skidio_completed(sync)
    assert queued["status"] == "IN_QUEUE"


@needs_chromium
async def test_seed_003_javascript_from_another_origin(demo: Stack, other_origin: str) -> None:
    runsync, run, status = examples("003", "javascript")
    async with browser_page(other_origin) as (page, console):
        await page.add_script_tag(content=seed_003(demo, runsync))
        ((image_url,),) = await console.wait_for(page, f"{demo.base_url}/")
        assert is_png(httpx.get(image_url).content)

        await page.add_script_tag(content=seed_003(demo, run))
        ((submitted,),) = await console.wait_for(page, "Job submitted: ")
        job_id = submitted.removeprefix("Job submitted: ")

        await page.add_script_tag(content=seed_003(demo, status, job_id))
        urls = await console.wait_for(page, f"{demo.base_url}/", count=2)
    assert is_png(httpx.get(urls[-1][0]).content)
