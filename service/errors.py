"""Errors become responses in the dialect of the route they happened on. Never a traceback.

Routes and helpers raise `contract.errors.ClientError`s and let `QueueError`s (Kafka failed us) propagate;
the handlers here pick the dialect by the path's prefix and answer with its `error_answer`. Anything else
is a 500 in that dialect's shape, logged once with its traceback.

When Kafka fails a client's request the answer says exactly what became of it, in the dialect's shape
for a Kafka outage (503) or an internal error (500), with the message replaced:
- Kafka unavailable: nothing happened; retry later (503, Retry-After).
- A submit not confirmed in time (SubmitUnconfirmed): the job goes on in the background and either runs
  or ends FAILED; the message names the job and where to follow it (503, X-Job-Id).
- A record Kafka refused for good (RecordRejected): the request was valid, sending it again cannot help
  (500; X-Job-Id for a submit, whose job never runs).
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

from contract.errors import (
    INTERNAL_MESSAGE,
    UNAVAILABLE_MESSAGE,
    ClientError,
    InvalidField,
    KafkaUnavailable,
    MethodNotAllowed,
    NotFound,
    QueueError,
    RecordRejected,
    SubmitRefused,
    SubmitUnconfirmed,
)
from dialects import a1111, modelslab, native, runpod, skidio
from producers.jobs import NOT_CONFIRMED

log = structlog.get_logger(__name__)
Model = TypeVar("Model", bound=BaseModel)
ErrorAnswer = Callable[[Exception], tuple[int, Any]]

# Each dialect's routes (service/app.py) start with its prefix; every other path is native. With each, where
# its clients read a job's status (A1111 has no such route: the native one serves the same keys).
DIALECT_PREFIXES: tuple[tuple[str, ErrorAnswer, str], ...] = (
    ("/api/v6", modelslab.error_answer, "POST /api/v6/realtime/fetch/{job_id}"),
    ("/v2", runpod.error_answer, "GET /v2/{endpoint}/status/{job_id}"),
    ("/sdapi/v1", a1111.error_answer, "GET /v1/jobs/{job_id}"),
    ("/api/txt2img", skidio.error_answer, "GET /api/txt2img/status?job_id={job_id}"),
)
NATIVE = ("", native.error_answer, "GET /v1/jobs/{job_id}")
UNAVAILABLE_RETRY_AFTER_S = 5
REFUSED_MESSAGE = (
    "Kafka refused to store this request for good (for example: it is over Kafka's size limit, or the API is not "
    "authorised to write). The request was valid, but sending it again will not help; the API's log has the cause."
)


def _dialect(path: str) -> tuple[str, ErrorAnswer, str]:
    for dialect in DIALECT_PREFIXES:
        prefix = dialect[0]
        if path == prefix or path.startswith(prefix + "/"):
            return dialect
    return NATIVE


def error_answer_for(path: str) -> ErrorAnswer:
    return _dialect(path)[1]


def error_response(path: str, error: Exception) -> Response:
    status, body = error_answer_for(path)(error)
    headers = error.headers if isinstance(error, ClientError) else None
    if isinstance(error, KafkaUnavailable):
        headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}
    if isinstance(error, SubmitUnconfirmed | SubmitRefused):
        headers = {**(headers or {}), "X-Job-Id": error.job_id}
    if isinstance(error, QueueError) and (message := _queue_message(path, error)) is not None:
        generic = UNAVAILABLE_MESSAGE if isinstance(error, KafkaUnavailable) else INTERNAL_MESSAGE
        body = _reworded(body, generic, message)
    return JSONResponse(body, status_code=status, headers=headers)


def _queue_message(path: str, error: QueueError) -> str | None:
    """What became of the client's request, when it is more than "Kafka is unavailable"."""
    if isinstance(error, SubmitUnconfirmed | SubmitRefused):
        route = _status_route(path, error.job_id)
        if isinstance(error, SubmitRefused):
            return f"{REFUSED_MESSAGE} Job {error.job_id} will not run; it ends FAILED ({route})."
        return (
            f"Kafka did not confirm job {error.job_id} in time, but the job was not dropped: it either runs as usual "
            f"or ends FAILED with the error {NOT_CONFIRMED!r}. Follow it at {route} (unknown for a moment until "
            "Kafka has it); submit it again only if it ends FAILED."
        )
    if isinstance(error, RecordRejected):
        return REFUSED_MESSAGE
    return None


def _status_route(path: str, job_id: str) -> str:
    """Where the dialect's clients read the job's status (RunPod's names the endpoint the request named)."""
    parts = path.split("/")
    return _dialect(path)[2].format(job_id=job_id, endpoint=parts[2] if len(parts) > 2 else "")


def _reworded(body: Any, generic: str, message: str) -> Any:
    """The dialect's body with its generic message replaced wherever it appears (A1111 repeats it)."""
    if isinstance(body, str):
        return body.replace(generic, message)
    if isinstance(body, dict):
        return {name: _reworded(value, generic, message) for name, value in body.items()}
    if isinstance(body, list):
        return [_reworded(value, generic, message) for value in body]
    return body


async def _handle(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RecordRejected):  # the operator's to fix: said once, with Kafka's reason
        log.error("Kafka refused a record", path=request.url.path, error=str(exc), cause=repr(exc.__cause__)[:300])
    return error_response(request.url.path, exc)


async def _handle_routing(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (a route, not this method), as our tree names them."""
    assert isinstance(exc, HTTPException)
    kind = {404: NotFound, 405: MethodNotAllowed}.get(exc.status_code, ClientError)
    return error_response(request.url.path, kind(exc.detail, headers=dict(exc.headers or {}) or None))


# For Starlette(exception_handlers=...). Unexpected exceptions are `UnexpectedErrors`' (see there why).
EXCEPTION_HANDLERS = {ClientError: _handle, QueueError: _handle, HTTPException: _handle_routing}


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
