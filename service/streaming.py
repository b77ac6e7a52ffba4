"""What the WebSocket and SSE routes share: the wire form of an event, and following one job.

On the wire an event is `{"job_id", "seq", "type", "ts", "data"}`; a `completed` event's outputs
carry URLs (never blob keys). Following a job checks that the key owns it, replays its history
after `since`, then goes live; a job whose history has left this instance's window still ends
with its terminal event, rebuilt from the state view.
"""

from __future__ import annotations

import asyncio
from enum import IntEnum
from typing import Any

import orjson
from starlette.requests import HTTPConnection

from consumers.stream_hub import StreamHub
from consumers.subscription import Subscription
from contract.errors import InvalidParameter, KafkaUnavailable
from contract.events import Event, EventType
from contract.states import JobState, JobStatus
from dialects.native import image_url
from service.state import AppState
from service.submission import owned_status

READY_WAIT_S = 5.0
_TERMINAL_EVENT = {
    JobState.COMPLETED: EventType.COMPLETED,
    JobState.FAILED: EventType.FAILED,
    JobState.CANCELLED: EventType.CANCELLED,
    JobState.TIMED_OUT: EventType.TIMED_OUT,
}


class CloseCode(IntEnum):
    """WebSocket close codes (README: Live progress). 4xxx mirror the HTTP statuses."""

    NORMAL = 1000  # the job ended; its terminal event was the last message
    TRY_AGAIN_LATER = 1013  # streams not ready (Kafka unreachable), or the client fell too far behind
    BAD_REQUEST = 4400  # a malformed `since` or message
    UNAUTHORIZED = 4401  # no key, or an unknown one
    NOT_FOUND = 4404  # no such job for this key (another key's job included)


def hub_of(connection: HTTPConnection) -> StreamHub:
    hub: StreamHub = connection.app.state.streams
    return hub


def render_event(event: Event, base_url: str) -> bytes:
    data: dict[str, Any] = event.data
    if event.type is EventType.COMPLETED:
        outputs = [
            {k: v for k, v in output.items() if k != "key"} | {"url": image_url(base_url, event.job_id, index)}
            for index, output in enumerate(data.get("outputs", []))
        ]
        data = {**data, "outputs": outputs}
    return orjson.dumps(
        {"job_id": event.job_id, "seq": event.seq, "type": event.type.value, "ts": event.ts, "data": data}
    )


def control(message_type: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": message_type, **fields})


def parse_seq(raw: str | None, name: str) -> int:
    """A `since` / `Last-Event-ID`: the last seq the client saw; -1 (everything) when absent."""
    if raw is None or raw == "":
        return -1
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter("must be an integer seq", name) from None
    if value < -1:
        raise InvalidParameter("must be -1 or more", name)
    return value


async def follow_job(
    app: AppState, hub: StreamHub, subscription: Subscription, job_id: str, owner: str, since: int
) -> bool:
    """Subscribe to one owned job; False (and no subscription) when the client has seen its end already.

    NotFound for another key's or an unknown job, KafkaUnavailable when the streams are not ready.
    """
    status = await authorize(app, hub, job_id, owner)
    if seen_the_end(status, since):
        return False
    attach(hub, subscription, status, since)
    return True


def seen_the_end(status: JobStatus, since: int) -> bool:
    """A client resuming after the terminal event: nothing will ever come (EventSource would retry forever)."""
    return status.is_terminal and since >= status.seq


async def authorize(app: AppState, hub: StreamHub, job_id: str, owner: str) -> JobStatus:
    """The job's status if `owner` may follow it, once the hub has caught up with that status."""
    if not await hub.wait_ready(READY_WAIT_S):
        raise KafkaUnavailable("the stream hub is not connected")
    status = await owned_status(app, job_id, owner)
    if hub.last_seq(job_id) < status.seq:  # the state view is ahead of the hub: let it catch up
        try:
            await asyncio.wait_for(hub.sync(), app.settings.submit_timeout_s)
        except TimeoutError:
            raise KafkaUnavailable("the stream hub could not catch up") from None
    return status


def attach(hub: StreamHub, subscription: Subscription, status: JobStatus, since: int) -> None:
    """History after `since`, then live events (synchronous: nothing can slip in between)."""
    hub.subscribe_job(subscription, status.job_id, since)
    if status.is_terminal and not hub.has_terminal(status.job_id):  # its events left this instance's window
        subscription.offer(hub.render(terminal_event(status)))


def terminal_event(status: JobStatus) -> Event:
    data: dict[str, Any]
    if status.state is JobState.COMPLETED:
        data = {"outputs": [o.model_dump() for o in status.outputs], "seeds": status.seeds}
    else:
        data = {"error": status.error}
    return Event(
        job_id=status.job_id,
        seq=status.seq,
        type=_TERMINAL_EVENT[status.state],
        ts=status.finished_at or status.updated_at,
        data=data,
    )

