"""WebSocket streams of job events: one job (`/v1/jobs/{id}/stream`) or many (`/v1/stream`).

The key comes as `Authorization: Bearer`, `?key=`, or in the first message `{"key": "..."}` (what
a browser can send); nothing else is read before it, and no message may exceed `MAX_MESSAGE_BYTES` (the server
closes with 1009 on reading a larger frame's header). A key holds at most EASEL_MAX_STREAMS_PER_KEY streams.
Refusals are a `{"type": "error", ...}` message, then a close code from `CloseCode`. Each connection has one
bounded `Subscription` and two tasks: the sender drains it, the receiver handles client messages and notices
the client leaving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from consumers.subscription import Overflowed, Subscription
from contract.errors import UNAVAILABLE_MESSAGE, ClientError, KafkaUnavailable, Unauthorized
from service.state import AppState
from service.streaming import CloseCode, attach, authorize, control, follow_job, hub_of, parse_seq

log = structlog.get_logger(__name__)
AUTH_WAIT_S = 10.0
# The largest message a client may send (a subscribe of 100 job ids is under 8 KiB); uvicorn's ws_max_size.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_JOBS_PER_MESSAGE = 100
MAX_JOBS_PER_CONNECTION = 1000
_CLOSE_FOR_STATUS = {
    400: CloseCode.BAD_REQUEST,
    401: CloseCode.UNAUTHORIZED,
    404: CloseCode.NOT_FOUND,
    429: CloseCode.TRY_AGAIN_LATER,
}
# What a WebSocket route may refuse with: a client's error (4xxx), or Kafka being unavailable (1013).
Refusal = (ClientError, KafkaUnavailable)

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[None]]


async def job_stream(websocket: WebSocket) -> None:
    """One job's events, then close 1000 after its terminal event. `?since=<seq>` resumes."""
    await websocket.accept()
    app: AppState = websocket.app.state.easel
    hub = hub_of(websocket)
    subscription = Subscription(app.settings.stream_queue, previews=_previews(websocket))
    try:
        owner, _ = await _authenticate(websocket, app)
        with app.stream_slots.hold(owner):
            since = parse_seq(websocket.query_params.get("since"), "since")
            if not await follow_job(app, hub, subscription, websocket.path_params["job_id"], owner, since):
                await websocket.close(CloseCode.NORMAL, "job ended")  # the client saw the terminal event already
                return
            await _serve(websocket, subscription, _ignore, close_after_terminal=True)
    except Refusal as exc:
        await _refuse(websocket, exc)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(subscription)


async def multiplexed_stream(websocket: WebSocket) -> None:
    """Many jobs on one connection, chosen with messages:

    {"op": "subscribe", "jobs": ["id", ...], "since": {"id": seq}} · {"op": "subscribe", "all": true}
    (every job of the key from now on) · {"op": "unsubscribe", "jobs": [...]} · {"op": "ping"}
    """
    await websocket.accept()
    app: AppState = websocket.app.state.easel
    hub = hub_of(websocket)
    subscription = Subscription(app.settings.stream_queue, previews=_previews(websocket))
    followed: set[str] = set()

    async def handle(message: Message) -> None:
        op = message.get("op")
        if op == "ping":
            subscription.put_control(control("pong"))
        elif op == "subscribe" and message.get("all") is True:
            hub.subscribe_owner(subscription, owner)
            subscription.put_control(control("subscribed", all=True))
        elif op == "subscribe" and _job_list(message) is not None:
            await _subscribe_jobs(message)
        elif op == "unsubscribe" and _job_list(message) is not None:
            for job_id in _job_list(message) or []:
                hub.unsubscribe_job(subscription, job_id)
                followed.discard(job_id)
            subscription.put_control(control("unsubscribed", jobs=_job_list(message)))
        elif op is not None:
            subscription.put_control(_error("bad_request", "op must be subscribe (jobs or all), unsubscribe or ping"))

    async def _subscribe_jobs(message: Message) -> None:
        sent_since = message.get("since")
        since: dict[str, Any] = sent_since if isinstance(sent_since, dict) else {}
        for job_id in _job_list(message) or []:
            if len(followed) >= MAX_JOBS_PER_CONNECTION:
                subscription.put_control(_error("too_many", f"at most {MAX_JOBS_PER_CONNECTION} jobs per connection"))
                return
            try:
                seq = parse_seq(str(since[job_id]) if job_id in since else None, "since")
                status = await authorize(app, hub, job_id, owner)
            except Refusal as exc:
                subscription.put_control(_error(*_code_and_message(exc), job_id=job_id))
                continue
            subscription.put_control(control("subscribed", job_id=job_id))
            attach(hub, subscription, status, seq)
            followed.add(job_id)

    try:
        owner, first = await _authenticate(websocket, app)
        with app.stream_slots.hold(owner):
            subscription.put_control(control("ready"))
            if first is not None:
                await handle(first)  # the message that carried the key may also subscribe
            await _serve(websocket, subscription, handle, close_after_terminal=False)
    except Refusal as exc:
        await _refuse(websocket, exc)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(subscription)


async def _serve(websocket: WebSocket, subscription: Subscription, handle: Handler, close_after_terminal: bool) -> None:
    """Run the sender and the receiver until either ends; the other is then cancelled."""
    tasks = [
        asyncio.create_task(_send_loop(websocket, subscription, close_after_terminal)),
        asyncio.create_task(_receive_loop(websocket, subscription, handle)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


async def _send_loop(websocket: WebSocket, subscription: Subscription, close_after_terminal: bool) -> None:
    while True:
        try:
            item = await subscription.get()
        except Overflowed:
            await websocket.close(CloseCode.TRY_AGAIN_LATER, "too far behind; reconnect with since=<last seq>")
            return
        await websocket.send_text(item.payload.decode())
        if close_after_terminal and item.is_terminal:
            await websocket.close(CloseCode.NORMAL, "job ended")
            return


async def _receive_loop(websocket: WebSocket, subscription: Subscription, handle: Handler) -> None:
    while True:
        message = await _receive_json(websocket)
        if message is None:  # replies go through the queue: one sender per connection
            subscription.put_control(_error("bad_request", "messages must be JSON objects"))
        else:
            await handle(message)


async def _authenticate(websocket: WebSocket, app: AppState) -> tuple[str, Message | None]:
    """The owner (key id), from the header or query, else from the first message (returned too)."""
    request = Request({**websocket.scope, "type": "http"})  # the same headers and query, as ApiKeys reads them
    if "authorization" in websocket.headers or "key" in websocket.query_params:
        return app.keys.authenticate(request), None
    try:
        first = await asyncio.wait_for(_receive_json(websocket), AUTH_WAIT_S)
    except TimeoutError:
        first = None
    key = first.get("key") if first is not None else None
    if not isinstance(key, str):
        raise Unauthorized('an API key is required: header, ?key= or a first message {"key": ...}', "key")
    return app.keys.authenticate(request, {"key": key}), first


async def _receive_json(websocket: WebSocket) -> Message | None:
    """The next client message as a JSON object; None when it is not one."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    raw = message.get("text") or message.get("bytes") or b""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


async def _refuse(websocket: WebSocket, error: ClientError | KafkaUnavailable) -> None:
    """The error as a message, then the close code for its HTTP status (1013 for Kafka being unavailable)."""
    status = error.status if isinstance(error, ClientError) else 503
    code, message = _code_and_message(error)
    if websocket.client_state is WebSocketState.CONNECTED:
        try:
            await websocket.send_text(_error(code, message).decode())
            # A close reason is at most 123 bytes.
            await websocket.close(_CLOSE_FOR_STATUS.get(status, CloseCode.TRY_AGAIN_LATER), message[:120])
        except (WebSocketDisconnect, RuntimeError):
            pass


def _code_and_message(error: ClientError | KafkaUnavailable) -> tuple[str, str]:
    if isinstance(error, ClientError):
        return error.code, error.message
    return "streams_unavailable", UNAVAILABLE_MESSAGE


async def _ignore(message: Message) -> None:
    return None


def _error(code: str, message: str, **fields: Any) -> bytes:
    return control("error", code=code, message=message, **fields)


def _job_list(message: Message) -> list[str] | None:
    jobs = message.get("jobs")
    if isinstance(jobs, list) and 0 < len(jobs) <= MAX_JOBS_PER_MESSAGE and all(isinstance(j, str) for j in jobs):
        return jobs
    return None


def _previews(websocket: WebSocket) -> bool:
    return websocket.query_params.get("previews", "true").lower() not in ("0", "false", "no")
