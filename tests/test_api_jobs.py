"""The native API end to end: HTTP → Kafka → runner (tiny SDXL) → state view → HTTP."""

from __future__ import annotations

import io
import time

import httpx
from PIL import Image, ImageChops

from contract.events import EventType
from contract.topics import Topics
from tests.kafka_io import job_events
from tests.processes import Stack


def wait_terminal(client: httpx.Client, job_id: str) -> dict[str, object]:
    body = client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
    assert body["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"), body
    return body


def test_job_goes_from_queue_to_a_png_of_the_requested_size(client: httpx.Client, job_spec: dict[str, object]) -> None:
    response = client.post("/v1/jobs", json=job_spec)
    assert response.status_code == 202, response.text
    submitted = response.json()
    assert submitted["state"] == "IN_QUEUE"
    assert response.headers["location"].endswith(f"/v1/jobs/{submitted['id']}")

    done = wait_terminal(client, submitted["id"])
    assert done["state"] == "COMPLETED", done
    assert done["seeds"] == [7]
    assert done["execution_ms"] is not None and done["delay_ms"] is not None
    [output] = done["outputs"]
    image = client.get(output["url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (128, 96)


async def test_events_are_ordered_with_one_progress_per_step_and_one_terminal(
    client: httpx.Client, stack: Stack, job_spec: dict[str, object]
) -> None:
    job_id = client.post("/v1/jobs", json={**job_spec, "steps": 5}).json()["id"]
    events = await job_events(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).events, job_id)

    assert [e.seq for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    assert types == [EventType.QUEUED, EventType.STARTED, *[EventType.PROGRESS] * 5, EventType.COMPLETED]
    progress = [e.data for e in events if e.type is EventType.PROGRESS]
    assert [p["step"] for p in progress] == [1, 2, 3, 4, 5]
    assert all(p["total"] == 5 for p in progress)
    assert progress[-1]["fraction"] == 1.0
    assert set(progress[0]) == {"step", "total", "fraction", "elapsed_s", "eta_s", "it_per_s"}


def test_second_order_sampler_reports_user_steps(client: httpx.Client, job_spec: dict[str, object]) -> None:
    job_id = client.post("/v1/jobs", json={**job_spec, "sampler": "Heun", "steps": 3}).json()["id"]
    done = wait_terminal(client, job_id)
    assert done["state"] == "COMPLETED"
    assert done["progress"]["step"] == done["progress"]["total"] == 3


def test_same_seed_same_image_and_random_seed_is_recorded(client: httpx.Client, job_spec: dict[str, object]) -> None:
    first, second = (client.post("/v1/jobs", json={**job_spec, "seed": 1234}).json()["id"] for _ in range(2))
    other = client.post("/v1/jobs", json={**job_spec, "seed": None, "num_images": 2}).json()["id"]
    images = []
    for job_id in (first, second):
        done = wait_terminal(client, job_id)
        images.append(Image.open(io.BytesIO(client.get(done["outputs"][0]["url"]).content)).convert("RGB"))
    # The same picture; not always the same bytes: a job batched with others (EASEL_BATCH_MAX_IMAGES) runs through
    # batched arithmetic, a few levels per pixel apart at most, as A1111's images differ across batch sizes.
    assert max(high for _, high in ImageChops.difference(*images).getextrema()) <= 3

    random_done = wait_terminal(client, other)
    seed = random_done["seeds"][0]
    assert random_done["seeds"] == [seed, seed + 1]  # A1111: image i uses seed + i
    assert [o["seed"] for o in random_done["outputs"]] == random_done["seeds"]
    assert client.get(random_done["outputs"][1]["url"]).status_code == 200


def test_jpeg_and_webp_outputs(client: httpx.Client, job_spec: dict[str, object]) -> None:
    for fmt, content_type in (("jpeg", "image/jpeg"), ("webp", "image/webp")):
        done = wait_terminal(client, client.post("/v1/jobs", json={**job_spec, "output_format": fmt}).json()["id"])
        image = client.get(done["outputs"][0]["url"])
        assert image.headers["content-type"] == content_type
        assert Image.open(io.BytesIO(image.content)).format == fmt.upper()


def test_key_in_body_works_like_a_bearer_token(stack: Stack, job_spec: dict[str, object]) -> None:
    response = httpx.post(f"{stack.base_url}/v1/jobs", json={**job_spec, "key": stack.key})
    assert response.status_code == 202


def test_a_job_is_visible_only_to_its_key(client: httpx.Client, stack: Stack, job_spec: dict[str, object]) -> None:
    done = wait_terminal(client, client.post("/v1/jobs", json=job_spec).json()["id"])
    other = {"Authorization": f"Bearer other-key-{stack.prefix}"}
    assert httpx.get(f"{stack.base_url}/v1/jobs/{done['id']}", headers=other).status_code == 404
    assert httpx.get(done["outputs"][0]["url"], headers=other).status_code == 404
    assert httpx.post(f"{stack.base_url}/v1/jobs/{done['id']}/cancel", headers=other).status_code == 404


def test_cancel_stops_a_running_job(client: httpx.Client, job_spec: dict[str, object]) -> None:
    job_id = client.post("/v1/jobs", json={**job_spec, "width": 512, "height": 512, "steps": 150}).json()["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job_id}").json()["state"] != "IN_PROGRESS":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    done = wait_terminal(client, job_id)
    assert done["state"] == "CANCELLED"
    assert done["error"] == "cancelled by request"
    # It ends with what it had made: its latents at the step it stopped, decoded (A1111's interrupt answers them).
    [output] = done["outputs"]
    assert (output["width"], output["height"]) == (512, 512) and done["seeds"] == [output["seed"]]
    image = client.get(f"/v1/jobs/{job_id}/images/0")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def test_health_openapi_and_metrics(client: httpx.Client) -> None:
    assert client.get("/health").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    routes = {(path, method) for path, methods in paths.items() for method in methods}
    assert {
        ("/v1/jobs", "post"),
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}/images/{index}", "get"),
        ("/v1/jobs/{job_id}/cancel", "post"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    } <= routes
    metrics = client.get("/metrics").text
    assert 'easel_http_requests_total{method="GET",route="/health",status="200"}' in metrics
