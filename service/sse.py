"""GET /v1/jobs/{id}/events: the job's events as Server-Sent Events, for curl and EventSource.

`id:` is the event's seq, so a reconnecting client's `Last-Event-ID` (or `?since=`) resumes after
it. A comment line every `stream_keepalive_s` keeps proxies from closing an idle stream and lets
the server notice a client that left. The stream ends after the terminal event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from consumers.stream_hub import StreamHub
from consumers.subscription import Overflowed, Subscription
from contract.states import JobStatus
from service.state import AppState
from service.stream_slots import HeldStreamingResponse
from service.streaming import attach, authorize, hub_of, parse_seq, seen_the_end

RETRY_MS = 2000


async def job_events(request: Request) -> Response:
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    header = request.headers.get("last-event-id")
    since = parse_seq(header, "Last-Event-ID") if header else parse_seq(request.query_params.get("since"), "since")
    previews = request.query_params.get("previews", "true").lower() not in ("0", "false", "no")
    hub = hub_of(request)
    status = await authorize(app, hub, request.path_params["job_id"], owner)  # errors are JSON 4xx
    if seen_the_end(status, since):
        return Response(status_code=204)  # tells EventSource to stop reconnecting
    give_back = app.stream_slots.take(owner)  # TooManyStreams (429) when the key holds its most already
    subscription = Subscription(app.settings.stream_queue, previews=previews)
    return HeldStreamingResponse(
        _stream(hub, subscription, status, since, app.settings.stream_keepalive_s),
        give_back,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    hub: StreamHub, subscription: Subscription, status: JobStatus, since: int, keepalive_s: float
) -> AsyncIterator[bytes]:
    # Subscribed here, not in the handler: if the client leaves before the body starts, nothing leaks.
    attach(hub, subscription, status, since)
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            try:
                item = await asyncio.wait_for(subscription.get(), keepalive_s)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            except Overflowed:  # too far behind: end; EventSource reconnects with Last-Event-ID
                return
            assert item.type is not None
            yield b"id: %d\nevent: %s\ndata: %s\n\n" % (item.seq, item.type.value.encode(), item.payload)
            if item.is_terminal:
                return
    finally:
        hub.unsubscribe(subscription)
