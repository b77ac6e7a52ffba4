"""Errors become responses in the dialect of the route they happened on. Never a traceback.

Routes and helpers raise `contract.errors.ClientError`s and let `KafkaUnavailable` propagate; the handlers
here pick the dialect by the path's prefix and answer with its `error_answer`. Anything else is a 500 in
that dialect's shape, logged once with its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contract.errors import ClientError, InvalidField, KafkaUnavailable, MethodNotAllowed, NotFound
from dialects import a1111, modelslab, native, runpod, skidio

log = structlog.get_logger(__name__)
Model = TypeVar("Model", bound=BaseModel)
ErrorAnswer = Callable[[Exception], tuple[int, Any]]

# Each dialect's routes (service/app.py) start with its prefix; every other path is native.
DIALECT_PREFIXES: tuple[tuple[str, ErrorAnswer], ...] = (
    ("/api/v6", modelslab.error_answer),
    ("/v2", runpod.error_answer),
    ("/sdapi/v1", a1111.error_answer),
    ("/api/txt2img", skidio.error_answer),
)
UNAVAILABLE_RETRY_AFTER_S = 5


def error_answer_for(path: str) -> ErrorAnswer:
    for prefix, answer in DIALECT_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return answer
    return native.error_answer


def error_response(path: str, error: Exception) -> Response:
    status, body = error_answer_for(path)(error)
    headers = error.headers if isinstance(error, ClientError) else None
    if isinstance(error, KafkaUnavailable):
        headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}
    return JSONResponse(body, status_code=status, headers=headers)


async def _handle(request: Request, exc: Exception) -> Response:
    return error_response(request.url.path, exc)


async def _handle_routing(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (a route, not this method), as our tree names them."""
    assert isinstance(exc, HTTPException)
    kind = {404: NotFound, 405: MethodNotAllowed}.get(exc.status_code, ClientError)
    return error_response(request.url.path, kind(exc.detail, headers=dict(exc.headers or {}) or None))


# For Starlette(exception_handlers=...). Unexpected exceptions are `UnexpectedErrors`' (see there why).
EXCEPTION_HANDLERS = {ClientError: _handle, KafkaUnavailable: _handle, HTTPException: _handle_routing}


class UnexpectedErrors:
    """Any other exception: a 500 in the route's dialect with no detail, logged once with its traceback.

    A middleware rather than Starlette's 500 handler, which re-raises to the server: that would log it twice.
    A client that left while its body was being read is no error: nobody is there to answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except ClientDisconnect:
            log.info("client left before its request was read", method=scope["method"], path=scope["path"])
        except Exception as exc:
            if started:  # too late to answer: the server logs it and drops the connection
                raise
            log.exception("unexpected error", method=scope["method"], path=scope["path"])
            await error_response(scope["path"], exc)(scope, receive, send)


def validated(model: type[Model], data: object, prefix: str = "", names: Mapping[str, str] | None = None) -> Model:
    """`model` from `data`, or an InvalidField naming the field as the client named it.

    `prefix`: where the data sits in the request (`input` for RunPod); `names`: model field → client's name.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_field(exc, prefix, names or {}) from None


def invalid_field(exc: ValidationError, prefix: str = "", names: Mapping[str, str] | None = None) -> InvalidField:
    """The one converter from pydantic: the first problem as field and rule, every one under `details`."""
    details = [_problem(error, prefix, names or {}) for error in exc.errors()]
    return InvalidField(details[0]["rule"], details[0]["field"], details=details)


def _problem(error: ErrorDetails, prefix: str, names: Mapping[str, str]) -> dict[str, str]:
    loc = [str(part) for part in error["loc"]]
    if loc:
        loc[0] = names.get(loc[0], loc[0])
    field = ".".join(part for part in (prefix, *loc) if part) or "body"
    rule = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        rule = "is not a known field"
    elif error["type"] == "missing":
        rule = "is required"
    return {"field": field, "rule": rule, "type": error["type"]}
