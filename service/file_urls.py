"""GET /files/{job_id}/{n}?token=: the signed public image URLs of dialects/links.py.

They answer 404 until the image exists, which is what ModelsLab's `future_links` promise; then the bytes, or,
with images on S3 and EASEL_S3_PRESIGNED_URLS=1, a 307 to a presigned URL of the store (service/images.py).
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from contract.errors import NotFound
from dialects.links import file_token
from service.images import image_response
from service.state import AppState


async def get_file(request: Request) -> Response:
    app: AppState = request.app.state.easel
    job_id: str = request.path_params["job_id"]
    index: int = request.path_params["index"]
    token = request.query_params.get("token", "")
    # As bytes: compare_digest refuses non-ASCII str, and a client chooses this one.
    if not hmac.compare_digest(token.encode(), file_token(app.settings, job_id, index).encode()):
        raise NotFound("no such file", "token")
    status = app.kafka.view.get(job_id)
    if status is None:
        raise NotFound("not ready yet", "index")
    return await image_response(app, status, index, public=True)
