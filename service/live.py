"""Live progress: the routes (WebSocket, SSE, the job list, the playground) and the stream hub they read."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from consumers.stream_hub import StreamHub
from contract.events import Event
from service.job_list import list_jobs
from service.playground import playground, playground_asset
from service.sse import job_events
from service.state import AppState
from service.streaming import render_event
from service.ws_streams import job_stream, multiplexed_stream

OWNER_WAIT_S = 5.0

LIVE_ROUTES: list[BaseRoute] = [
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    WebSocketRoute("/v1/jobs/{job_id}/stream", job_stream),
    WebSocketRoute("/v1/stream", multiplexed_stream),
    Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"]),
    Route("/", playground, methods=["GET"]),
    Route("/playground/{name}", playground_asset, methods=["GET"]),
]


async def start_stream_hub(app: AppState) -> StreamHub:
    """The instance's hub, connecting in the background (streams answer 503 / 1013 until it is ready)."""
    base_url = app.settings.base_url

    def render(event: Event) -> bytes:
        return render_event(event, base_url)

    async def owner_of(job_id: str) -> str | None:
        view = app.kafka.view
        status = view.get(job_id) or await view.wait_for(job_id, lambda s: True, OWNER_WAIT_S)
        return status.owner if status is not None else None

    hub = StreamHub(app.settings, render, owner_of)
    await hub.start()
    return hub
