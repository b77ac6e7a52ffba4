"""Serving a job's output image: one place for "not yet", "expired" and "gone"."""

from __future__ import annotations

from starlette.responses import Response

from contract.errors import NotFound
from contract.states import JobStatus
from service.state import AppState
from service.submission import expired


async def image_response(app: AppState, status: JobStatus, index: int, public: bool) -> Response:
    """The image, or a 404 that says why: not ready (ModelsLab's future_links poll this), expired, gone."""
    if index >= len(status.outputs):
        raise NotFound(f"job {status.job_id} has no image {index} (yet)", "index")
    if expired(app, status):
        raise NotFound("this image has expired", "index")
    output = status.outputs[index]
    data = await app.blobs.get(output.key)
    if data is None:
        raise NotFound("this image is no longer stored", "index")
    cache = "public, max-age=86400" if public else "private, max-age=86400"
    return Response(data, media_type=output.content_type, headers={"Cache-Control": cache})
