"""Webhook bodies in the job's dialect. The shapes come from `dialects/` (one place per dialect); this
module only adds what a webhook has beyond a status answer: the event, `track_id`, RunPod's echo.

Bodies are thin: image URLs, never image bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from contract.events import Event, EventType
from contract.settings import Settings
from contract.states import JobStatus
from dialects import modelslab, runpod
from dialects.links import file_urls
from dialects.native import render_status

Renderer = Callable[[Event, JobStatus, str, Settings], dict[str, Any]]


def render_body(
    dialect: str, event: Event, status: JobStatus, url: str, track_id: str | None, settings: Settings
) -> dict[str, Any]:
    body = _RENDERERS.get(dialect, _native)(event, status, url, settings)
    if track_id is not None:
        body["track_id"] = track_id
    return body


def _native(event: Event, status: JobStatus, url: str, settings: Settings) -> dict[str, Any]:
    """The Standard Webhooks envelope around the native status."""
    data = render_status(status, settings.base_url)
    if event.type is EventType.PROGRESS:
        data["progress"] = event.data  # this step's, not whatever the status has reached since
    return {
        "type": f"job.{event.type.value}",
        "timestamp": datetime.fromtimestamp(event.ts, UTC).isoformat(),
        "data": data,
    }


def _modelslab(event: Event, status: JobStatus, url: str, settings: Settings) -> dict[str, Any]:
    urls = file_urls(settings, status.job_id, len(status.outputs) or int(status.spec.get("num_images") or 1))
    fetch_url = f"{settings.base_url}/api/v6/realtime/fetch/{status.job_id}"
    body = modelslab.render(status, urls, None, fetch_url)
    if body["status"] == "error":
        body["status"] = "failed"  # ModelsLab's webhooks say `failed` where its responses say `error`
    return body


def _runpod(event: Event, status: JobStatus, url: str, settings: Settings) -> dict[str, Any]:
    output = None
    if status.outputs:
        output = runpod.public_output(file_urls(settings, status.job_id, len(status.outputs)))
    body = runpod.envelope(status, output)
    # RunPod's cloud webhook is the whole job envelope, `input` and `webhook` included.
    body["input"] = status.client_input or {}
    body["webhook"] = url
    return body


_RENDERERS: dict[str, Renderer] = {"modelslab": _modelslab, "runpod": _runpod}
