"""Serving a job's output image: one place for "not yet", "expired" and "gone"."""

from __future__ import annotations

from starlette.responses import Response

from contract.blobs import BlobStore
from contract.states import JobStatus
from service.errors import ApiError
from service.state import AppState
from service.submission import expired


def image_response(app: AppState, status: JobStatus, index: int, public: bool) -> Response:
    """The image, or a 404 that says why: not ready (ModelsLab's future_links poll this), expired, gone."""
    if index >= len(status.outputs):
        raise ApiError(404, "not_found", f"job {status.job_id} has no image {index} (yet)", field="index")
    if expired(app, status):
        raise ApiError(404, "not_found", "this image has expired", field="index")
    output = status.outputs[index]
    data = BlobStore(app.settings.blob_dir).get(output.key)
    if data is None:
        raise ApiError(404, "not_found", "this image is no longer stored", field="index")
    cache = "public, max-age=86400" if public else "private, max-age=86400"
    return Response(data, media_type=output.content_type, headers={"Cache-Control": cache})
