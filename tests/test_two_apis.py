"""Two API instances on one broker serve each other's jobs: whatever one took, the other answers in every way.

The session stack's API is instance 1; instance 2 is a second `easel api` with the same environment on
another port. Nothing is shared between them but Kafka and the blob store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from service.streaming import CloseCode
from tests.processes import EaselProcess, Stack, free_port, wait_for_health
from tests.stream_clients import TERMINAL, Received, parse_sse, read_until_closed, ws_url

LONG_JOB = {"prompt": "a lighthouse at dusk", "width": 256, "height": 256, "steps": 150, "preview": True}
SHORT_JOB = {"prompt": "a lighthouse at dusk", "width": 128, "height": 96, "steps": 4, "seed": 7}


@pytest.fixture(scope="module")
def other_api(stack: Stack) -> Iterator[str]:
    """Instance 2's base URL."""
    port = free_port()
    process = EaselProcess("api", {**stack.env, "EASEL_PORT": str(port)}, stack.workdir / "api-2.log")
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_health(base_url, process)
        yield base_url
    finally:
        process.stop()


def auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.key}"}


def submit(stack: Stack, spec: dict[str, Any]) -> str:
    response = httpx.post(f"{stack.base_url}/v1/jobs", json=spec, headers=auth(stack))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def assert_one_stream(events: list[dict[str, Any]], last: str) -> None:
    """Increasing seqs from the `queued` event, one terminal event, and it is `last`, at the end."""
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)) and events[0]["type"] == "queued", seqs
    assert [e["type"] for e in events if e["type"] in TERMINAL] == [last] and events[-1]["type"] == last


async def websocket_events(base_url: str, job_id: str, key: str) -> Received:
    url = ws_url(base_url, f"/v1/jobs/{job_id}/stream")
    async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        return await read_until_closed(ws)


async def sse_events(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=120) as response:
        assert response.status_code == 200
        text = "".join([chunk async for chunk in response.aiter_text()])
    return [orjson.loads(record["data"]) for record in parse_sse(text) if "id" in record]


async def test_a_job_taken_by_one_instance_is_followed_live_on_the_other(stack: Stack, other_api: str) -> None:
    job_id = submit(stack, LONG_JOB)
    async with httpx.AsyncClient(base_url=other_api, headers=auth(stack), timeout=30) as other:
        websocket = asyncio.create_task(websocket_events(other_api, job_id, stack.key))
        sse = asyncio.create_task(sse_events(other, job_id))

        # A1111 /progress on instance 2 shows the job running, with a preview from instance 2's own stream hub.
        deadline = time.monotonic() + 90
        while (progress := (await other.get("/sdapi/v1/progress")).json())["current_image"] is None:
            assert time.monotonic() < deadline, progress
            await asyncio.sleep(0.2)
        assert progress["state"]["job"] == job_id and progress["state"]["sampling_steps"] == LONG_JOB["steps"]
        assert progress["state"]["sampling_step"] >= 1 and 0 < progress["progress"] < 1

        native = (await other.get(f"/v1/jobs/{job_id}")).json()
        assert native["state"] == "IN_PROGRESS" and native["id"] == job_id
        runpod = (await other.get(f"/v2/ep/status/{job_id}")).json()
        assert runpod["status"] == "IN_PROGRESS" and runpod["id"] == job_id
        modelslab = (await other.post(f"/api/v6/realtime/fetch/{job_id}", json={"key": stack.key})).json()
        assert modelslab["status"] == "processing", modelslab

        # Instance 2 stops it too (at its next step), and its synchronous wait sees the end.
        assert (await other.post(f"/v1/jobs/{job_id}/cancel")).status_code == 202
        done = (await other.get(f"/v1/jobs/{job_id}", params={"wait": 60}, timeout=90)).json()
        assert done["state"] == "CANCELLED", done

        received = await asyncio.wait_for(websocket, 60)
        assert received.close_code == CloseCode.NORMAL
        assert_one_stream(received.events, "cancelled")
        assert {"started", "progress", "preview"} <= {e["type"] for e in received.events}
        streamed = await asyncio.wait_for(sse, 60)
        assert_one_stream(streamed, "cancelled")
        assert streamed[-1]["seq"] == received.events[-1]["seq"] == done["seq"]


async def test_a_finished_job_taken_by_one_instance_answers_every_dialect_and_its_image_on_the_other(
    stack: Stack, other_api: str
) -> None:
    job_id = submit(stack, SHORT_JOB)
    async with httpx.AsyncClient(base_url=other_api, headers=auth(stack), timeout=30) as other:
        done = (await other.get(f"/v1/jobs/{job_id}", params={"wait": 60}, timeout=90)).json()
        assert done["state"] == "COMPLETED", done
        [output] = done["outputs"]
        assert output["url"].startswith(other_api)  # instance 2 links to itself
        image = await other.get(output["url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"

        late = await websocket_events(other_api, job_id, stack.key)  # the whole history, from instance 2's hub
        assert_one_stream(late.events, "completed")
        assert_one_stream(await sse_events(other, job_id), "completed")

        runpod = (await other.get(f"/v2/ep/status/{job_id}")).json()
        assert runpod["status"] == "COMPLETED", runpod
        modelslab = (await other.post(f"/api/v6/realtime/fetch/{job_id}", json={"key": stack.key})).json()
        assert modelslab["status"] == "success", modelslab
        [link] = modelslab["output"]
        async with httpx.AsyncClient() as anonymous:  # a signed link: no key
            assert (await anonymous.get(link)).content == image.content


async def test_dialect_jobs_taken_by_one_instance_are_fetched_from_the_other(stack: Stack, other_api: str) -> None:
    small = {"prompt": "x", "width": 64, "height": 64}
    runpod = httpx.post(
        f"{stack.base_url}/v2/ep/run", json={"input": {**small, "num_inference_steps": 4}}, headers=auth(stack)
    ).json()
    modelslab = httpx.post(
        f"{stack.base_url}/api/v6/realtime/text2img",
        json={"key": stack.key, **small, "num_inference_steps": 4, "instant_response": True},
    ).json()
    assert "id" in runpod and "id" in modelslab, (runpod, modelslab)
    deadline = time.monotonic() + 90
    while (status := httpx.get(f"{other_api}/v2/ep/status/{runpod['id']}", headers=auth(stack)).json())[
        "status"
    ] != "COMPLETED":
        assert status["status"] in ("IN_QUEUE", "IN_PROGRESS") and time.monotonic() < deadline, status
        time.sleep(0.2)
    assert httpx.get(status["output"]["image_url"]).status_code == 200
    fetch = f"{other_api}/api/v6/realtime/fetch/{modelslab['id']}"
    while (fetched := httpx.post(fetch, json={"key": stack.key}).json())["status"] != "success":
        assert fetched["status"] == "processing" and time.monotonic() < deadline, fetched
        time.sleep(0.2)
    assert fetched["id"] == modelslab["id"]
    assert httpx.get(fetched["output"][0]).status_code == 200


async def test_a_stream_dropped_on_one_instance_resumes_on_the_other(stack: Stack, other_api: str) -> None:
    """What a client behind a load balancer does: reconnect with the last seq, to whichever instance."""
    job_id = submit(stack, {**SHORT_JOB, "steps": 8})
    url = ws_url(stack.base_url, f"/v1/jobs/{job_id}/stream")
    async with connect(url, additional_headers=auth(stack)) as ws:
        first = await read_until_closed(ws, limit=3)
    last_seq = first.events[-1]["seq"]
    rest_url = ws_url(other_api, f"/v1/jobs/{job_id}/stream?since={last_seq}")
    async with connect(rest_url, additional_headers=auth(stack)) as ws:
        rest = await read_until_closed(ws)
    assert rest.events[0]["seq"] > last_seq
    assert_one_stream(first.events + rest.events, "completed")
    async with httpx.AsyncClient(base_url=other_api, headers=auth(stack), timeout=30) as other:
        whole = await sse_events(other, job_id)
        async with other.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(last_seq)}) as tail:
            text = "".join([chunk async for chunk in tail.aiter_text()])
    assert first.events + rest.events == whole
    assert [orjson.loads(r["data"]) for r in parse_sse(text) if "id" in r] == rest.events
