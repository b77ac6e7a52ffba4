"""GET /files/{job_id}/{n}?token=: the signed public image URLs of dialects/links.py.

They answer 404 until the image exists, which is what ModelsLab's `future_links` promise.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from contract.blobs import BlobStore
from dialects.links import file_token
from service.errors import ApiError
from service.state import AppState
from service.submission import expired


async def get_file(request: Request) -> Response:
    app: AppState = request.app.state.easel
    job_id: str = request.path_params["job_id"]
    index: int = request.path_params["index"]
    token = request.query_params.get("token", "")
    if not hmac.compare_digest(token, file_token(app.settings, job_id, index)):
        raise ApiError(404, "not_found", "no such file", field="token")
    status = app.kafka.view.get(job_id)
    if status is None or index >= len(status.outputs):
        raise ApiError(404, "not_found", "not ready yet", field="index")  # future_links poll this
    if expired(app, status):
        raise ApiError(404, "not_found", "this image has expired", field="index")
    output = status.outputs[index]
    data = BlobStore(app.settings.blob_dir).get(output.key)
    if data is None:
        raise ApiError(404, "not_found", "this image is no longer stored", field="index")
    return Response(data, media_type=output.content_type, headers={"Cache-Control": "public, max-age=86400"})
