"""Live progress over real WebSocket and SSE clients, against the real broker, API and runner."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from contract.topics import Topics
from service.streaming import CloseCode
from tests.kafka_io import job_events
from tests.processes import EaselProcess, Stack, free_port
from tests.stream_clients import (
    assert_well_formed,
    parse_sse,
    read_until_closed,
    sse_events,
    stream_job,
    ws_url,
)


def submit(client: httpx.Client, spec: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_healthy(base_url: str, process: EaselProcess) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.process.poll() is None, process.output()[-3000:]
        time.sleep(0.2)
    raise TimeoutError(process.output()[-3000:])


def wait_terminal(client: httpx.Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
    assert body["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"), body
    return body


async def test_stream_is_ordered_and_ends_with_exactly_one_terminal_event(
    client: httpx.Client, stack: Stack, job_spec: dict[str, Any]
) -> None:
    job_id = submit(client, {**job_spec, "steps": 5})
    received = await stream_job(stack.base_url, job_id, stack.key)

    assert received.close_code == CloseCode.NORMAL
    assert_well_formed(received.events)
    types = [e["type"] for e in received.events]
    assert types == ["queued", "started", *["progress"] * 5, "completed"]
    assert isinstance(received.events[0]["data"]["queue_position"], int)
    progress = [e["data"] for e in received.events if e["type"] == "progress"]
    assert [p["step"] for p in progress] == [1, 2, 3, 4, 5]
    assert set(progress[0]) == {"step", "total", "fraction", "elapsed_s", "eta_s", "it_per_s"}
    [output] = received.events[-1]["data"]["outputs"]
    assert output["url"].endswith(f"/v1/jobs/{job_id}/images/0") and "key" not in output
    assert client.get(output["url"]).status_code == 200


async def test_reconnect_with_since_loses_nothing(client: httpx.Client, stack: Stack, job_spec: dict[str, Any]) -> None:
    job_id = submit(client, {**job_spec, "steps": 8})
    url = ws_url(stack.base_url, f"/v1/jobs/{job_id}/stream")
    async with connect(url, additional_headers={"Authorization": f"Bearer {stack.key}"}) as ws:
        first = await read_until_closed(ws, limit=3)  # then drop the connection mid-job
    last_seq = first.events[-1]["seq"]
    rest = await stream_job(stack.base_url, job_id, stack.key, query=f"?since={last_seq}")

    assert rest.events[0]["seq"] == last_seq + 1
    events = first.events + rest.events
    assert_well_formed(events)
    on_kafka = await job_events(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).events, job_id)
    assert [(e["seq"], e["type"]) for e in events] == [(e.seq, e.type.value) for e in on_kafka]


async def test_late_subscriber_gets_the_whole_history_and_the_terminal_event(
    client: httpx.Client, stack: Stack, job_spec: dict[str, Any]
) -> None:
    job_id = submit(client, job_spec)
    wait_terminal(client, job_id)
    received = await stream_job(stack.base_url, job_id, stack.key)

    assert_well_formed(received.events)
    assert [e["type"] for e in received.events][:2] == ["queued", "started"]
    assert received.events[-1]["type"] == "completed"


async def test_a_stuck_client_does_not_delay_a_fast_one(
    client: httpx.Client, stack: Stack, job_spec: dict[str, Any]
) -> None:
    """The stuck client reads nothing until the fast one has the terminal event; it then gets a coalesced stream."""
    job_id = submit(client, {**job_spec, "width": 256, "height": 256, "steps": 40, "preview": True})
    url = ws_url(stack.base_url, f"/v1/jobs/{job_id}/stream")
    headers = {"Authorization": f"Bearer {stack.key}"}
    # Stuck for real: max_queue=1 stops it reading at once; a small receive buffer and segment size keep the
    # kernel from buffering (loopback's 64 KiB segments would let the server's send buffer grow past a MiB).
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1024)
    sock.connect(("127.0.0.1", stack.port))
    async with connect(url, additional_headers=headers, max_queue=1, compression=None, sock=sock) as stuck:
        fast = await stream_job(stack.base_url, job_id, stack.key)
        assert_well_formed(fast.events)
        slow = await read_until_closed(stuck)

    seqs = [e["seq"] for e in slow.events]
    assert seqs == sorted(set(seqs)) and seqs[0] == 0
    assert slow.events[-1] == fast.events[-1]  # the terminal event is never dropped
    assert len(slow.events) < len(fast.events), "nothing was coalesced: the stuck client never fell behind"
    kept = {e["seq"] for e in fast.events if e["type"] not in ("progress", "preview")}
    assert kept <= set(seqs)  # only progress and previews may be coalesced


async def test_previews_are_jpegs_of_the_promised_size(
    client: httpx.Client, stack: Stack, job_spec: dict[str, Any]
) -> None:
    import base64
    import io

    from PIL import Image

    for (width, height), promised in (((128, 96), (128, 96)), ((512, 384), (256, 192))):
        job_id = submit(client, {**job_spec, "width": width, "height": height, "steps": 4, "preview": True})
        received = await stream_job(stack.base_url, job_id, stack.key)
        previews = [e["data"] for e in received.events if e["type"] == "preview"]
        assert [p["step"] for p in previews] == [1, 2, 3]  # about ten per job: every step of 4 but the last
        for preview in previews:
            image = Image.open(io.BytesIO(base64.b64decode(preview["image"])))
            assert image.format == "JPEG" and preview["content_type"] == "image/jpeg"
            assert image.size == (preview["width"], preview["height"]) == promised
    without = await stream_job(stack.base_url, job_id, stack.key, query="?previews=false")
    assert not [e for e in without.events if e["type"] == "preview"]


async def test_wrong_key_foreign_job_and_unknown_job_are_refused(
    client: httpx.Client, stack: Stack, job_spec: dict[str, Any]
) -> None:
    job_id = submit(client, job_spec)
    refused = await stream_job(stack.base_url, job_id, "not-a-key")
    assert refused.close_code == CloseCode.UNAUTHORIZED
    assert refused.messages == [{"type": "error", "code": "unauthorized", "message": "invalid API key"}]

    foreign = await stream_job(stack.base_url, job_id, f"other-key-{stack.prefix}")
    assert foreign.close_code == CloseCode.NOT_FOUND and not foreign.events
    unknown = await stream_job(stack.base_url, "no-such-job", stack.key)
    assert unknown.close_code == CloseCode.NOT_FOUND
    bad_since = await stream_job(stack.base_url, job_id, stack.key, query="?since=abc")
    assert bad_since.close_code == CloseCode.BAD_REQUEST

    # A browser sends the key as its first message; a wrong one is refused the same way.
    async with connect(ws_url(stack.base_url, f"/v1/jobs/{job_id}/stream")) as ws:
        await ws.send(orjson.dumps({"key": "wrong"}).decode())
        assert (await read_until_closed(ws)).close_code == CloseCode.UNAUTHORIZED
    async with connect(ws_url(stack.base_url, f"/v1/jobs/{job_id}/stream")) as ws:
        await ws.send(orjson.dumps({"key": stack.key}).decode())
        assert_well_formed((await read_until_closed(ws)).events)

    assert sse_events(stack.base_url, job_id, "not-a-key").status_code == 401
    assert sse_events(stack.base_url, job_id, f"other-key-{stack.prefix}").status_code == 404


async def test_multiplexed_stream_follows_several_jobs_and_all_jobs_of_its_key(
    client: httpx.Client, stack: Stack, job_spec: dict[str, Any]
) -> None:
    other_key = f"other-key-{stack.prefix}"
    foreign = httpx.post(f"{stack.base_url}/v1/jobs", json=job_spec, headers={"Authorization": f"Bearer {other_key}"})
    first, second = submit(client, job_spec), submit(client, job_spec)
    wait_terminal(client, first)
    async with (
        connect(ws_url(stack.base_url, "/v1/stream")) as ws,
        connect(ws_url(stack.base_url, "/v1/stream")) as everything,
    ):
        await everything.send(orjson.dumps({"key": stack.key, "op": "subscribe", "all": True}).decode())
        acks = [orjson.loads(await everything.recv()) for _ in range(2)]
        assert acks == [{"type": "ready"}, {"type": "subscribed", "all": True}]
        await ws.send(orjson.dumps({"key": stack.key}).decode())
        await ws.send(
            orjson.dumps(
                {"op": "subscribe", "jobs": [first, second, foreign.json()["id"]], "since": {first: 1}}
            ).decode()
        )
        third = submit(client, job_spec)  # after the key-wide subscription: it must show up there
        ended: set[str] = set()
        messages: list[dict[str, Any]] = []
        while ended != {first, second} or not any(m["type"] == "error" for m in messages):
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
            messages.append(message)
            if message.get("type") in ("completed", "failed"):
                ended.add(message["job_id"])
        key_wide: list[dict[str, Any]] = []
        while not any(m.get("job_id") == third and m.get("type") == "completed" for m in key_wide):
            key_wide.append(orjson.loads(await asyncio.wait_for(everything.recv(), 60)))

    controls = [m for m in messages if "seq" not in m]
    assert controls[0] == {"type": "ready"}
    assert {m.get("job_id") for m in controls if m["type"] == "subscribed"} == {first, second}
    assert [m["code"] for m in controls if m["type"] == "error"] == ["not_found"]  # another key's job
    for job_id, first_seq in ((first, 2), (second, 0)):
        assert_well_formed([m for m in messages if m.get("job_id") == job_id and "seq" in m], first_seq=first_seq)
    assert {m["job_id"] for m in key_wide if "seq" in m} <= {first, second, third}  # never the other key's job
    assert_well_formed([m for m in key_wide if m.get("job_id") == third and "seq" in m])


def test_sse_streams_with_seq_ids_and_resumes_from_last_event_id(
    client: httpx.Client, stack: Stack, job_spec: dict[str, Any]
) -> None:
    job_id = submit(client, job_spec)
    response = sse_events(stack.base_url, job_id, stack.key)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    records = [r for r in parse_sse(response.text) if "id" in r]
    events = [orjson.loads(r["data"]) for r in records]
    assert_well_formed(events)
    assert [int(r["id"]) for r in records] == [e["seq"] for e in events]
    assert [r["event"] for r in records] == [e["type"] for e in events]

    resumed = sse_events(stack.base_url, job_id, stack.key, headers={"Last-Event-ID": records[2]["id"]})
    again = [orjson.loads(r["data"]) for r in parse_sse(resumed.text) if "id" in r]
    assert again == events[3:]
    assert sse_events(stack.base_url, job_id, stack.key, headers={"Last-Event-ID": "x"}).status_code == 400


async def test_a_new_instance_rebuilds_history_from_kafka(
    client: httpx.Client, stack: Stack, job_spec: dict[str, Any], tmp_path: Path
) -> None:
    job_id = submit(client, job_spec)
    wait_terminal(client, job_id)
    port = free_port()
    second = EaselProcess("api", {**stack.env, "EASEL_PORT": str(port)}, tmp_path / "api-2.log")
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, second)
        resumed = await stream_job(base_url, job_id, stack.key, query="?since=1")
    finally:
        second.stop()
    on_kafka = await job_events(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).events, job_id)
    assert [(e["seq"], e["type"]) for e in resumed.events] == [(e.seq, e.type.value) for e in on_kafka[2:]]


def test_job_list_shows_the_keys_recent_jobs_newest_first(
    client: httpx.Client, stack: Stack, job_spec: dict[str, Any]
) -> None:
    ids = [submit(client, {**job_spec, "prompt": f"list {n}"}) for n in range(2)]
    listed = client.get("/v1/jobs", params={"limit": 2}).json()["jobs"]
    assert [j["id"] for j in listed] == ids[::-1]
    assert [j["prompt"] for j in listed] == ["list 1", "list 0"]
    other = httpx.get(f"{stack.base_url}/v1/jobs", headers={"Authorization": f"Bearer other-key-{stack.prefix}"})
    assert not set(ids) & {j["id"] for j in other.json()["jobs"]}
    assert client.get("/v1/jobs", params={"limit": 1000}).status_code == 400
