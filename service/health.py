"""Health as Kubernetes probes read it.

- `/health/live`: 200 whenever the process can answer at all (its event loop runs this); never asks Kafka.
  A failing liveness probe restarts the container, which cannot bring Kafka back.
- `/health/ready`: 200 only when every Kafka-backed part is connected and caught up: the producer is open,
  and each view following a topic (the job states, the stream hub's events) still follows it and has been
  caught up with Kafka within EASEL_HEALTH_MAX_LAG_S. Otherwise 503, naming each part and what is wrong.
- `/health`: readiness, plus how many jobs this instance knows (`jobs_known`: queued, running, and finished
  within EASEL_RETENTION_S; it falls as finished jobs are purged, see service/retention.py).

Reading a view's lag asks Kafka nothing: the views note when Kafka last answered their fetches with
nothing left to apply, so a probe stays cheap and answers at once even when the broker is away.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.state import AppState


class Followed(Protocol):
    """A view that follows a topic (a TopicMirror, or what wraps one)."""

    @property
    def alive(self) -> bool: ...

    def lag_s(self) -> float: ...


def view_health(view: Followed | None, max_lag_s: float) -> dict[str, Any]:
    if view is None:
        return {"ok": False, "problem": "not connected to Kafka"}
    lag_s = view.lag_s()
    facts: dict[str, Any] = {"following": view.alive, "lag_s": round(lag_s, 3) if math.isfinite(lag_s) else None}
    if not view.alive:
        return {"ok": False, **facts, "problem": "not following its topic (stopped, or reconnecting)"}
    if lag_s > max_lag_s:
        return {"ok": False, **facts, "problem": f"not caught up with Kafka for more than {max_lag_s:g} s"}
    return {"ok": True, **facts}


def readiness(request: Request) -> tuple[bool, dict[str, Any]]:
    """Whether this instance is ready, and the body saying so part by part."""
    app: AppState = request.app.state.easel
    bound = app.settings.health_max_lag_s
    parts = {
        "producer": {"ok": True} if app.kafka.producer is not None else {"ok": False, "problem": "not connected"},
        "state_view": view_health(app.kafka.connected_view, bound),
        "stream_hub": view_health(request.app.state.streams, bound),
    }
    ready = all(part["ok"] for part in parts.values())
    body = {
        "status": "ok" if ready else "unavailable",
        "kafka": "connected" if app.kafka.ready else "unreachable",
        "parts": parts,
    }
    return ready, body


async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    is_ready, body = readiness(request)
    return JSONResponse(body, status_code=200 if is_ready else 503)


async def health(request: Request) -> Response:
    app: AppState = request.app.state.easel
    is_ready, body = readiness(request)
    body["jobs_known"] = len(app.kafka.view) if app.kafka.ready else 0
    return JSONResponse(body, status_code=200 if is_ready else 503)
