"""Webhook bodies in the job's dialect. The shapes come from `dialects/` (one place per dialect); this
module only adds what a webhook has beyond a status answer: the event, `track_id`, RunPod's echo.

Bodies are thin: image URLs, never image bytes. And bounded: a body over EASEL_WEBHOOK_MAX_BODY_BYTES
(JSON) has its echoed request (RunPod `input`) replaced by `{"truncated": true, "bytes": N}`, N the
size of what it replaced; if that is not enough, its largest fields are, one at a time, in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from contract.deliveries import MAX_WEBHOOK_BODY_BYTES
from contract.errors import SettingsError
from contract.events import Event, EventType
from contract.settings import Settings
from contract.states import JobStatus
from dialects import modelslab, runpod
from dialects.links import file_urls
from dialects.native import render_status

Renderer = Callable[[Event, JobStatus, str, Settings], dict[str, Any]]
Container = dict[str, Any] | list[Any]
MIN_BODY_CAP = 1024  # room for any dialect's envelope once its fields are truncated


@dataclass(frozen=True)
class Body:
    text: str  # the JSON sent, at most the cap
    rendered_bytes: int  # the size before truncation

    @property
    def truncated(self) -> bool:
        return self.rendered_bytes > len(self.text.encode())


def body_cap(settings: Settings) -> int:
    """EASEL_WEBHOOK_MAX_BODY_BYTES, checked against the bound that keeps a Delivery record under Kafka's limit."""
    cap = settings.webhook_max_body_bytes
    if not MIN_BODY_CAP <= cap <= MAX_WEBHOOK_BODY_BYTES:
        raise SettingsError(
            f"EASEL_WEBHOOK_MAX_BODY_BYTES: must be between {MIN_BODY_CAP} and {MAX_WEBHOOK_BODY_BYTES}"
        )
    return cap


def webhook_body(
    dialect: str, event: Event, status: JobStatus, url: str, track_id: str | None, settings: Settings, cap: int
) -> Body:
    """The body to send, rendered and bounded to `cap` bytes."""
    return bounded(render_body(dialect, event, status, url, track_id, settings), cap, _ECHOED.get(dialect, ()))


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
    return modelslab.render(status, urls, None, fetch_url, webhook=True)


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
# Fields that echo the client's request back, truncated first.
_ECHOED: dict[str, tuple[str, ...]] = {"runpod": ("input",)}


def truncated(size: int) -> dict[str, Any]:
    """What stands in for a value of `size` bytes (JSON) that did not fit."""
    return {"truncated": True, "bytes": size}


_MARKER_BYTES = len(orjson.dumps(truncated(10**9)))


def bounded(body: dict[str, Any], cap: int, echoed: tuple[str, ...] = ()) -> Body:
    """`body` as JSON of at most `cap` (>= MIN_BODY_CAP) bytes: echoed fields, then the largest ones, truncated."""
    encoded = orjson.dumps(body)
    rendered = len(encoded)
    if rendered <= cap:
        return Body(encoded.decode(), rendered)
    tree: dict[str, Any] = orjson.loads(encoded)  # a copy: the status' own dicts stay as they are
    for name in echoed:
        if name in tree:
            tree[name] = truncated(len(orjson.dumps(tree[name])))
    while len(encoded := orjson.dumps(tree)) > cap:
        if not _truncate_one(tree, len(encoded) - cap):
            encoded = orjson.dumps(truncated(rendered))  # only tiny fields, too many of them
            break
    return Body(encoded.decode(), rendered)


def _truncate_one(tree: dict[str, Any], excess: int) -> bool:
    """Replace one value: the deepest along the largest branch whose replacement alone saves `excess` bytes,
    else the largest at the top. False when no value is larger than its marker."""
    node: Container = tree
    while (largest := _largest_child(node)) is not None:
        slot, size = largest
        value = node[slot]
        deeper = _largest_child(value) if isinstance(value, dict | list) else None
        if deeper is not None and deeper[1] - _MARKER_BYTES >= excess:
            node = value
            continue
        if size <= _MARKER_BYTES:
            return False
        node[slot] = truncated(size)
        return True
    return False


def _largest_child(node: Container) -> tuple[Any, int] | None:
    """(key or index, JSON size) of `node`'s largest value."""
    slots = node.items() if isinstance(node, dict) else enumerate(node)
    sizes = [(slot, len(orjson.dumps(value))) for slot, value in slots]
    return max(sizes, key=lambda pair: pair[1], default=None)
