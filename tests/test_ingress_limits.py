"""What a client can send is bounded: echoed input, WebSocket messages, streams per key, work per job, bodies
cut short. Against the real broker, API and runner; the records' size bound is proved on the contract alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any, get_args

import httpx
import orjson
import pytest
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect

from contract.errors import InvalidField
from contract.job import (
    DEFAULT_MAX_JOB_WORK,
    MAX_ECHO_BYTES,
    MAX_SEED,
    EventName,
    Job,
    WebhookSpec,
    check_work_budget,
)
from contract.lifecycle import queued_status
from contract.serialization import encode
from contract.settings import Settings
from contract.states import JobState, JobStatus, Output, Progress
from service.streaming import CloseCode
from service.ws_streams import MAX_MESSAGE_BYTES
from tests.processes import EaselProcess, Stack
from tests.stream_clients import ws_url

KAFKA_RECORD_LIMIT = 1 << 20
# RunPod's A1111 shape with an unknown field of about 1 MB: accepted before, it made status records too large.
SMALL_A1111 = {"prompt": "x", "cfg_scale": 5, "steps": 2, "width": 64, "height": 64}
EVERY_EVENT = get_args(EventName)
# One character that takes the most room in JSON: orjson writes a control character as \u00XX (6 bytes).
WIDEST = "\x01"


def api_process(stack: Stack) -> EaselProcess:
    return next(p for p in stack.processes if p.log_path.name == "api.log")


def runner_process(stack: Stack) -> EaselProcess:
    return next(p for p in stack.processes if p.log_path.name.startswith("runner"))


# --- the contract: every record has a size bound ------------------------------------------------------------------

def _echo_of_size(size: int) -> dict[str, Any]:
    """A client input whose JSON is exactly `size` bytes."""
    overhead = len(orjson.dumps({"pad": ""}))
    return {"pad": "A" * (size - overhead)}


def _worst_case_job() -> Job:
    return Job(
        id="j" * 64,
        owner=WIDEST * 64,
        prompt=WIDEST * 4000,
        negative_prompt=WIDEST * 4000,
        width=2048,
        height=2048,
        steps=150,
        num_images=4,
        seed=MAX_SEED,
        model=WIDEST * 200,
        refiner=WIDEST * 200,
        execution_timeout_s=3600,
        ttl_s=7 * 24 * 3600,
        dialect=WIDEST * 32,
        # Characters pydantic percent-encodes (" is %22): the longest URL once encoded.
        webhook={"url": "https://example.com/" + '"' * 687, "track_id": WIDEST * 256, "events": list(EVERY_EVENT)},
        client_input=_echo_of_size(MAX_ECHO_BYTES),
    )


def test_a_worst_case_job_and_status_fit_in_a_kafka_record_with_room_to_spare() -> None:
    job = _worst_case_job()
    outputs = [
        Output(key=f"{'k' * 200}/{i}.webp", content_type="image/webp", width=2048, height=2048, seed=MAX_SEED,
               nsfw=True)
        for i in range(4)
    ]
    status = queued_status(job, 0.0).model_copy(update={
        "state": JobState.FAILED,
        "seq": 10**9,
        "runner_id": WIDEST * 256,
        "progress": Progress(step=150, total=150, fraction=1.0, elapsed_s=1e9, eta_s=1e9, it_per_s=1e9),
        "outputs": outputs,
        "seeds": [MAX_SEED] * 4,
        "error": WIDEST * 8192,  # a long failure reason (a traceback's last lines)
        "started_at": 1e10,
        "finished_at": 1e10,
        "attempt": 10**6,
        "retries": 10**6,
    })
    JobStatus.model_validate(orjson.loads(encode(status)))  # still a valid record
    # A quarter of the limit: room for Kafka's batch framing and for fields added later.
    assert len(encode(job)) < KAFKA_RECORD_LIMIT // 4
    assert len(encode(status)) < KAFKA_RECORD_LIMIT // 4


def test_a_job_echoing_more_than_the_cap_is_invalid() -> None:
    fields = {"id": "j1", "owner": "o", "prompt": "x"}
    Job.model_validate({**fields, "client_input": _echo_of_size(MAX_ECHO_BYTES)})
    with pytest.raises(ValidationError, match="client_input"):
        Job.model_validate({**fields, "client_input": _echo_of_size(MAX_ECHO_BYTES + 1)})


def test_a_webhook_url_too_long_once_percent_encoded_is_invalid() -> None:
    with pytest.raises(ValidationError, match="once percent-encoded"):
        WebhookSpec(url="https://example.com/" + '"' * 688)


def test_the_work_budget_counts_pixels_images_and_steps() -> None:
    at_budget = Job(id="j", owner="o", prompt="x", width=1024, height=1024, num_images=4, steps=50)
    check_work_budget(at_budget, DEFAULT_MAX_JOB_WORK)
    over = at_budget.model_copy(update={"steps": 51})
    with pytest.raises(InvalidField, match=r"^budget: .* 1024 × 1024 × 4 × 51 = 213909504 exceeds .* 209715200"):
        check_work_budget(over, DEFAULT_MAX_JOB_WORK)
    check_work_budget(over, 0)  # 0: no budget


# --- capped echoes ------------------------------------------------------------------------------------------------

def test_a_megabyte_runpod_input_is_refused_and_the_next_job_completes(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    padded = {"input": {**SMALL_A1111, "pad": "A" * 1_000_000}}
    refused = httpx.post(f"{stack.base_url}/v2/ep/run", json=padded, headers=headers, timeout=30)
    assert refused.status_code == 413, refused.text
    message = refused.json()["error"]
    assert message.startswith("input is ") and f"at most {MAX_ECHO_BYTES}" in message, message

    after = httpx.post(f"{stack.base_url}/v2/ep/runsync", json={"input": SMALL_A1111}, headers=headers, timeout=120)
    assert after.status_code == 200, after.text
    assert after.json()["status"] == "COMPLETED", after.text
    assert runner_process(stack).process.poll() is None


def test_an_a1111_payload_over_the_echo_cap_is_413_naming_the_body(client: httpx.Client) -> None:
    # `comments` (A1111 echoes it back in the job's parameters): a field Easel takes, so the echo cap decides.
    response = client.post("/sdapi/v1/txt2img", json={**SMALL_A1111, "comments": {"x": "A" * MAX_ECHO_BYTES}})
    assert response.status_code == 413, response.text
    assert response.json()["detail"].startswith("body is "), response.text


# --- the work budget ----------------------------------------------------------------------------------------------

BUDGET_BUSTERS: dict[str, tuple[str, dict[str, Any], int]] = {
    "native": ("/v1/jobs", {"prompt": "x", "width": 2048, "height": 2048, "num_images": 4, "steps": 150}, 422),
    "runpod": ("/v2/ep/run", {"input": {**SMALL_A1111, "width": 2048, "height": 2048, "batch_size": 4,
                                        "steps": 150}}, 400),
    "a1111": ("/sdapi/v1/txt2img", {**SMALL_A1111, "width": 2048, "height": 2048, "batch_size": 4, "steps": 150},
              422),
    "modelslab": ("/api/v6/realtime/text2img", {"prompt": "x", "width": 1024, "height": 1024, "samples": 4,
                                                "num_inference_steps": 150}, 400),
}


def _budget_message(dialect: str, body: dict[str, Any]) -> str:
    if dialect == "native":
        assert body["error"]["field"] == "budget"
        return str(body["error"]["message"])
    if dialect == "a1111":
        (problem,) = body["detail"]
        assert problem["loc"] == ["body", "budget"]
        return str(problem["msg"])
    if dialect == "modelslab":
        assert body["status"] == "error"
        return str(body["message"])
    return str(body["error"])


@pytest.mark.parametrize("dialect", BUDGET_BUSTERS)
def test_a_job_over_the_work_budget_is_refused_in_the_dialects_shape(
    client: httpx.Client, settings: Settings, dialect: str
) -> None:
    path, body, expected = BUDGET_BUSTERS[dialect]
    if dialect == "modelslab":
        body = {**body, "key": client.headers["authorization"].removeprefix("Bearer ")}
    response = client.post(path, json=body)
    assert response.status_code == expected, response.text
    message = _budget_message(dialect, response.json())
    assert "budget" in message and str(settings.max_job_work) in message, message


# --- WebSocket frames and streams per key -------------------------------------------------------------------------

def _open_raw_websocket(base_url: str, path: str) -> socket.socket:
    """A WebSocket handshake by hand, so a test can send a frame header alone."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def _read_close_code(sock: socket.socket) -> int:
    """Read server frames until a close frame; its status code."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "the server dropped the connection without a close frame"
        data += chunk
        while len(data) >= 2:
            opcode, length = data[0] & 0x0F, data[1] & 0x7F
            header = 2 + {126: 2, 127: 8}.get(length, 0)
            if length >= 126:
                if len(data) < header:
                    break
                length = int.from_bytes(data[2:header])
            if len(data) < header + length:
                break
            payload, data = data[header:header + length], data[header + length:]
            if opcode == 0x8:
                return int.from_bytes(payload[:2])


def test_a_16_mib_frame_before_authentication_is_refused_from_its_header(stack: Stack) -> None:
    sock = _open_raw_websocket(stack.base_url, "/v1/stream")  # no key yet: the server waits for a first message
    with sock:
        # FIN + text, masked, a 64-bit length of 16 MiB, a mask; then only a few payload bytes, never the rest.
        sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 16 << 20) + os.urandom(4) + b"{" * 16)
        assert _read_close_code(sock) == 1009  # "message too big", decided on the header alone
    assert MAX_MESSAGE_BYTES == 64 * 1024
    assert httpx.get(f"{stack.base_url}/health", timeout=10).status_code == 200
    assert api_process(stack).process.poll() is None


@contextlib.asynccontextmanager
async def _streams(base_url: str, key: str, count: int) -> AsyncIterator[list[ClientConnection]]:
    async with contextlib.AsyncExitStack() as stack:
        connections = []
        for _ in range(count):
            ws = await stack.enter_async_context(
                connect(ws_url(base_url, "/v1/stream"), additional_headers={"Authorization": f"Bearer {key}"})
            )
            assert orjson.loads(await ws.recv())["type"] == "ready"
            connections.append(ws)
        yield connections


async def test_a_key_over_its_stream_cap_is_refused_until_one_closes(
    stack: Stack, client: httpx.Client, settings: Settings, job_spec: dict[str, object]
) -> None:
    job = client.post("/v1/jobs", json=job_spec)
    assert job.status_code == 202, job.text
    events_path = f"/v1/jobs/{job.json()['id']}/events"
    limit = settings.max_streams_per_key
    async with _streams(stack.base_url, stack.key, limit) as held:
        async with connect(ws_url(stack.base_url, "/v1/stream"),
                           additional_headers={"Authorization": f"Bearer {stack.key}"}) as refused:
            error = orjson.loads(await refused.recv())
            assert error["type"] == "error" and error["code"] == "too_many_streams", error
            await refused.wait_closed()
            assert refused.close_code == CloseCode.TRY_AGAIN_LATER
        sse = client.get(events_path)
        assert sse.status_code == 429, sse.text
        assert sse.json()["error"]["code"] == "too_many_streams"
        assert "retry-after" in sse.headers

        other_key = stack.env["EASEL_API_KEYS"].split(",")[1]  # the cap is per key
        async with _streams(stack.base_url, other_key, 1):
            pass

        await held[0].close()
        assert await _accepted_soon(stack.base_url, stack.key)  # the slot it held is free again


async def _accepted_soon(base_url: str, key: str) -> bool:
    """Whether a new stream is accepted once the server has noticed a closed one (it does after the close
    handshake, so the first tries may still be refused)."""
    for _ in range(100):
        async with connect(ws_url(base_url, "/v1/stream"), additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            if orjson.loads(await ws.recv())["type"] == "ready":
                return True
        await asyncio.sleep(0.1)
    return False


# --- a body cut short ---------------------------------------------------------------------------------------------

def test_a_client_leaving_mid_body_leaves_no_traceback_in_the_log(stack: Stack) -> None:
    api = api_process(stack)
    start = len(api.output())
    host, port = stack.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {stack.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode() + b'{"prompt": "' + b"x" * 1000
        )
    api.wait_for_output("client left before its request was read", after=start)
    assert httpx.get(f"{stack.base_url}/health", timeout=10).status_code == 200
    logged = api.output()[start:]
    assert "Traceback" not in logged and "unexpected error" not in logged, logged
