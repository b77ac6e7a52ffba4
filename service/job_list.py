"""GET /v1/jobs?limit=N: the key's most recent jobs, newest first, from this instance's state view."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dialects.native import render_status
from service.requests import bounded_float
from service.state import AppState
from service.submission import caught_up

MAX_LIMIT = 100


async def list_jobs(request: Request) -> Response:
    """The key's most recent jobs, newest first (`?limit=`, at most 100)."""
    app: AppState = request.app.state.easel
    owner = app.keys.authenticate(request)
    limit = int(bounded_float(request, "limit", 20, MAX_LIMIT))
    own = (await caught_up(app)).recent(owner, limit)  # read-your-writes: include a job just submitted
    base_url = app.settings.base_url
    return JSONResponse({"jobs": [render_status(s, base_url) | {"prompt": s.spec.get("prompt")} for s in own]})
