"""The native dialect: Easel's own JSON for a job status, as the /v1 API and native webhooks show it, and for
errors: `{"error": {"code", "message", "field", "details"}}` with the status of the exception tree.

A job's status is named as `JobState` names it (RunPod's names), under `status`; `state` carries the same value
for clients of the previous release and goes away in the next one (deprecated).
"""

from __future__ import annotations

from typing import Any

from contract.errors import INTERNAL_MESSAGE, UNAVAILABLE_MESSAGE, ClientError, KafkaUnavailable
from contract.states import JobStatus

# Where a request carries its input images (base64 or an http(s) URL; the job carries the keys they are stored at).
IMAGE_PATHS: dict[str, tuple[str | int, ...]] = {"init_image": ("init_image",), "mask_image": ("mask_image",)}


def job_url(base_url: str, job_id: str) -> str:
    return f"{base_url}/v1/jobs/{job_id}"


def image_url(base_url: str, job_id: str, index: int) -> str:
    return f"{job_url(base_url, job_id)}/images/{index}"


def render_status(status: JobStatus, base_url: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": status.job_id,
        "status": status.state.value,
        "state": status.state.value,  # deprecated alias of `status`, for one release
        "seq": status.seq,
        "created_at": status.created_at,
        "started_at": status.started_at,
        "finished_at": status.finished_at,
        "delay_ms": _ms(status.started_at, status.created_at),
        "execution_ms": _ms(status.finished_at, status.started_at),
        "attempt": status.attempt,
        "runner_id": status.runner_id,  # the runner that ran (or runs) its latest attempt
        "progress": status.progress.model_dump() if status.progress else None,
        "outputs": [
            {
                "url": image_url(base_url, status.job_id, index),
                "content_type": output.content_type,
                "width": output.width,
                "height": output.height,
                "seed": output.seed,
                "nsfw": output.nsfw,
            }
            for index, output in enumerate(status.outputs)
        ],
        "seeds": status.seeds,
        # Per image: the safety checker flagged it, and it was replaced by a black image.
        "nsfw_content_detected": status.nsfw_content_detected,
        "error": status.error,
        "links": {"self": job_url(base_url, status.job_id)},
    }
    if status.track_id is not None:
        body["track_id"] = status.track_id
    return body


def _ms(end: float | None, start: float | None) -> int | None:
    if end is None or start is None:
        return None
    return max(0, round((end - start) * 1000))


def error_answer(error: Exception) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for a client's error, Kafka being unavailable, or anything else (a 500)."""
    if isinstance(error, ClientError):
        body: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.field:
            body["field"] = error.field
        if error.details:
            body["details"] = error.details
        return error.status, {"error": body}
    if isinstance(error, KafkaUnavailable):
        return 503, {"error": {"code": "kafka_unavailable", "message": UNAVAILABLE_MESSAGE}}
    return 500, {"error": {"code": "internal", "message": INTERNAL_MESSAGE}}
