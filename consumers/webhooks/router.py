"""From job events to deliveries: pick the events each job asked for, render the body once, queue it."""

from __future__ import annotations

import time

import orjson
import structlog
from pydantic import ValidationError

from consumers.state_view import StateView
from consumers.webhooks.bodies import render_body
from consumers.webhooks.targets import Targets, WebhookTarget
from contract.deliveries import Delivery, delivery_id
from contract.events import Event, EventType
from contract.serialization import decode
from contract.settings import Settings
from contract.states import JobStatus

log = structlog.get_logger(__name__)
STATUS_WAIT_S = 10.0  # the status follows its event within milliseconds; this only bounds a broken stack


class ProgressThrottle:
    """At most one progress delivery per job per interval, by the events' own timestamps."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last: dict[str, float] = {}

    def admit(self, event: Event) -> bool:
        if event.type is not EventType.PROGRESS:
            if event.type.is_terminal:
                self._last.pop(event.job_id, None)
            return True
        last = self._last.get(event.job_id)
        if last is not None and event.ts - last < self._interval_s:
            return False
        self._last[event.job_id] = event.ts
        return True


class Router:
    def __init__(self, settings: Settings, targets: Targets, view: StateView, first_delay_s: float) -> None:
        self._settings = settings
        self._targets = targets
        self._view = view
        self._first_delay_s = first_delay_s
        self._throttle = ProgressThrottle(settings.webhook_progress_interval_s)

    async def route(self, raw: bytes) -> Delivery | None:
        """The delivery this event calls for, or None."""
        try:
            event = decode(Event, raw)
        except (ValidationError, ValueError):
            log.warning("unreadable event skipped")
            return None
        # A queued event is written just before its request: give the request a moment to land.
        wait_s = self._settings.submit_timeout_s if event.type is EventType.QUEUED else 0.0
        target = await self._targets.lookup(event.job_id, wait_s)
        if target is None or event.type.value not in target.events or not self._throttle.admit(event):
            return None
        status = await self._status(event)
        if status is None:
            log.warning("no status for event, not delivered", job_id=event.job_id, seq=event.seq)
            return None
        body = render_body(target.dialect, event, status, target.url, target.track_id, self._settings)
        return self._delivery(event, target, body)

    async def _status(self, event: Event) -> JobStatus | None:
        """The job's status as of this event; almost always there already, so no watcher or timer."""
        status = self._view.get(event.job_id)
        if status is not None and status.seq >= event.seq:
            return status
        return await self._view.wait_for(event.job_id, lambda s: s.seq >= event.seq, STATUS_WAIT_S)

    def _delivery(self, event: Event, target: WebhookTarget, body: dict[str, object]) -> Delivery:
        now = time.time()
        return Delivery(
            id=delivery_id(event.job_id, event.seq),
            job_id=event.job_id,
            owner=target.owner,
            event=event.type.value,
            seq=event.seq,
            url=target.url,
            track_id=target.track_id,
            body=orjson.dumps(body).decode(),
            due_at=now + self._first_delay_s,
            created_at=now,
        )
