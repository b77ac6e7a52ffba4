"""Errors a client can cause, rendered as JSON naming the field and the rule. Never a traceback."""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = structlog.get_logger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        details: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers
        self.details = details


def validation_error(exc: ValidationError, prefix: str = "") -> ApiError:
    """The first problem names field and rule; all of them are listed under `details`."""
    details = [_describe(e, prefix) for e in exc.errors()]
    first = details[0]
    message = f"{first['field']}: {first['rule']}"
    return ApiError(422, "invalid_request", message, field=first["field"], details=details)


def _describe(error: Any, prefix: str) -> dict[str, str]:
    e = dict(error)
    field = ".".join(str(part) for part in (prefix, *e["loc"]) if part != "") or "body"
    rule = str(e["msg"]).removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        rule = "is not a known field"
    elif e["type"] == "missing":
        rule = "is required"
    return {"field": field, "rule": rule}


def error_body(error: ApiError) -> dict[str, object]:
    body: dict[str, object] = {"code": error.code, "message": error.message}
    if error.field:
        body["field"] = error.field
    if error.details:
        body["details"] = error.details
    return {"error": body}


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(error_body(exc), status_code=exc.status, headers=exc.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": {"code": code, "message": exc.detail}}, status_code=exc.status_code)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", path=request.url.path)
    return JSONResponse({"error": {"code": "internal", "message": "internal error"}}, status_code=500)


async def handle_kafka_unavailable(request: Request, exc: Exception) -> Response:
    """Any route that reads a view before the API reached Kafka: 503, never a 500."""
    return JSONResponse(
        {"error": {"code": "kafka_unavailable", "message": "the job queue (Kafka) is unavailable, retry later"}},
        status_code=503,
        headers={"Retry-After": "5"},
    )
