"""Serving a job's output image: one place for "not yet", "expired" and "gone".

A public link (service/file_urls.py) to an image on a store that hands out its own links (S3 with
EASEL_S3_PRESIGNED_URLS=1) answers 307 to a short-lived presigned URL: the bytes never pass through the API.
Every other image is read from the store and streamed.
"""

from __future__ import annotations

import time

from starlette.responses import RedirectResponse, Response

from contract.errors import NotFound
from contract.states import JobStatus
from service.state import AppState
from service.submission import expired

# A redirect is followed at once; a presigned URL that lives longer would only outlive the check made here.
PRESIGNED_LINK_S = 300.0


async def image_response(app: AppState, status: JobStatus, index: int, public: bool) -> Response:
    """The image, or a 404 that says why: not ready (ModelsLab's future_links poll this), expired, gone."""
    if index >= len(status.outputs):
        raise NotFound(f"job {status.job_id} has no image {index} (yet)", "index")
    if expired(app, status):
        raise NotFound("this image has expired", "index")
    output = status.outputs[index]
    if public and (link := await app.blobs.public_link(output.key, _link_lifetime(app, status))) is not None:
        # A new signature each time: caching the redirect would hand out a link past its expiry.
        return RedirectResponse(link, status_code=307, headers={"Cache-Control": "no-store"})
    data = await app.blobs.get(output.key)
    if data is None:
        raise NotFound("this image is no longer stored", "index")
    cache = "public, max-age=86400" if public else "private, max-age=86400"
    return Response(data, media_type=output.content_type, headers={"Cache-Control": cache})


def _link_lifetime(app: AppState, status: JobStatus) -> float:
    """PRESIGNED_LINK_S, or less when the image expires sooner: a link never outlives the image's retention."""
    if status.finished_at is None:
        return PRESIGNED_LINK_S
    return min(PRESIGNED_LINK_S, status.finished_at + app.settings.retention_s - time.time())
