"""Streams of finished and retried jobs: a client that saw the end gets no endless stream."""

from __future__ import annotations

import httpx
from websockets.asyncio.client import connect

from tests.processes import Stack
from tests.stream_clients import read_until_closed, ws_url

JOB = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2}


def finished_job(stack: Stack) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {stack.key}"}
    job_id = httpx.post(f"{stack.base_url}/v1/jobs", json=JOB, headers=headers).json()["id"]
    done = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", params={"wait": 30}, headers=headers).json()
    assert done["state"] == "COMPLETED"
    return done


def test_sse_resuming_after_the_terminal_event_is_204(stack: Stack) -> None:
    done = finished_job(stack)
    headers = {"Authorization": f"Bearer {stack.key}", "Last-Event-ID": str(done["seq"])}
    answer = httpx.get(f"{stack.base_url}/v1/jobs/{done['id']}/events", headers=headers, timeout=10)
    assert answer.status_code == 204  # EventSource stops reconnecting on 204
    one_before = {**headers, "Last-Event-ID": str(int(str(done["seq"])) - 1)}
    rest = httpx.get(f"{stack.base_url}/v1/jobs/{done['id']}/events", headers=one_before, timeout=10)
    assert rest.status_code == 200 and "event: completed" in rest.text


async def test_websocket_resuming_after_the_terminal_event_closes_at_once(stack: Stack) -> None:
    done = finished_job(stack)
    url = ws_url(stack.base_url, f"/v1/jobs/{done['id']}/stream?since={done['seq']}&key={stack.key}")
    async with connect(url) as ws:
        received = await read_until_closed(ws)
    assert received.events == [] and received.close_code == 1000


def test_a_retried_job_streams_its_second_run(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    body = {"input": {"prompt": "x", "width": 64, "height": 64, "num_inference_steps": 2}, "policy": {"ttl": 1}}
    job_id = httpx.post(f"{stack.base_url}/v2/ep/run", json=body, headers=headers).json()["id"]
    first = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", params={"wait": 30}, headers=headers).json()
    assert first["state"] == "TIMED_OUT"
    assert httpx.post(f"{stack.base_url}/v2/ep/retry/{job_id}", headers=headers).status_code == 200
    again = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", params={"wait": 30}, headers=headers).json()
    assert again["state"] == "TIMED_OUT" and again["seq"] > first["seq"]
    sse = httpx.get(
        f"{stack.base_url}/v1/jobs/{job_id}/events", headers={**headers, "Last-Event-ID": str(first["seq"])}, timeout=10
    ).text
    assert "event: queued" in sse and "event: timed_out" in sse  # the second run, after the first's end
