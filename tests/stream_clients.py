"""Real WebSocket and SSE clients for the stream tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


@dataclass
class Received:
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "seq" in m]


def ws_url(base_url: str, path: str) -> str:
    return "ws" + base_url.removeprefix("http") + path


async def read_until_closed(
    ws: ClientConnection, received: Received | None = None, limit: int | None = None
) -> Received:
    """Messages until the server closes (or `limit` events were read)."""
    received = received or Received()
    try:
        while limit is None or len(received.events) < limit:
            received.messages.append(orjson.loads(await ws.recv()))
    except ConnectionClosed as closed:
        received.close_code = closed.rcvd.code if closed.rcvd else None
    return received


async def stream_job(base_url: str, job_id: str, key: str, query: str = "", **kwargs: Any) -> Received:
    """A whole single-job stream, with the key as a Bearer header."""
    url = ws_url(base_url, f"/v1/jobs/{job_id}/stream{query}")
    async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}, **kwargs) as ws:
        return await read_until_closed(ws)


def parse_sse(text: str) -> list[dict[str, Any]]:
    """SSE records as {"id", "event", "data"}; comment lines are kept as {"comment": ...}."""
    records = []
    for block in text.split("\n\n"):
        record: dict[str, Any] = {}
        for line in block.splitlines():
            name, _, value = line.partition(":")
            if name == "":
                record["comment"] = value.strip()
            else:
                record[name] = value.removeprefix(" ")
        if record:
            records.append(record)
    return records


def sse_events(base_url: str, job_id: str, key: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(
        f"{base_url}/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {key}", **(headers or {})}, timeout=60
    )


def assert_well_formed(events: list[dict[str, Any]], first_seq: int = 0) -> None:
    """Contiguous increasing seq from `first_seq`, exactly one terminal event, and it is the last."""
    assert [e["seq"] for e in events] == list(range(first_seq, first_seq + len(events))), [e["seq"] for e in events]
    terminals = [e for e in events if e["type"] in TERMINAL]
    assert len(terminals) == 1 and events[-1] is terminals[0], [e["type"] for e in events]
