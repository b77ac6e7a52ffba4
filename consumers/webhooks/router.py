"""From job events to deliveries: pick the events each job asked for, render the body once (bounded), queue it.

Routing raises when it cannot do its job for now (no status for the event yet, Kafka away, a bug):
the dispatcher then routes the event again on the retry schedule instead of dropping it.
"""

from __future__ import annotations

import time

import structlog

from consumers.state_view import StateView
from consumers.webhooks.bodies import Body, body_cap, webhook_body
from consumers.webhooks.targets import Targets, WebhookTarget
from contract.deliveries import Delivery, delivery_id
from contract.events import Event, EventType
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


class MissingStatus(LookupError):
    """The job's status as of an event is not in the state view (yet): routed again later."""


class Router:
    def __init__(self, settings: Settings, targets: Targets, view: StateView, first_delay_s: float) -> None:
        self._settings = settings
        self._targets = targets
        self._view = view
        self._first_delay_s = first_delay_s
        self._throttle = ProgressThrottle(settings.webhook_progress_interval_s)
        self._body_cap = body_cap(settings)  # SettingsError at start-up when out of bounds

    async def route(self, event: Event, attempts_made: int = 0) -> Delivery | None:
        """The delivery this event calls for, or None when the job wants none for it.

        `attempts_made`: routing attempts that failed before; they count as the delivery's attempts.
        """
        # A queued event is written just before its request: give the request a moment to land.
        wait_s = self._settings.submit_timeout_s if event.type is EventType.QUEUED else 0.0
        target = await self._targets.lookup(event.job_id, wait_s)
        if target is None or event.type.value not in target.events:
            return None
        # An event routed again was never delivered: the throttle, which admits an event once, is not asked twice.
        if attempts_made == 0 and not self._throttle.admit(event):
            return None
        status = await self._status(event)
        body = webhook_body(
            target.dialect, event, status, target.url, target.track_id, self._settings, self._body_cap
        )
        if body.truncated:
            log.warning(
                "webhook body truncated", job_id=event.job_id, track_id=target.track_id,
                rendered_bytes=body.rendered_bytes, cap=self._body_cap,
            )
        return self._delivery(event, target, body, attempts_made)

    async def _status(self, event: Event) -> JobStatus:
        """The job's status as of this event; almost always there already, so no watcher or timer."""
        status = self._view.get(event.job_id)
        if status is None or status.seq < event.seq:
            status = await self._view.wait_for(event.job_id, lambda s: s.seq >= event.seq, STATUS_WAIT_S)
        if status is None or status.seq < event.seq:
            raise MissingStatus(f"no status of job {event.job_id} as of event {event.seq}")
        return status

    def _delivery(self, event: Event, target: WebhookTarget, body: Body, attempts_made: int) -> Delivery:
        now = time.time()
        return Delivery(
            id=delivery_id(event.job_id, event.seq),
            job_id=event.job_id,
            owner=target.owner,
            event=event.type.value,
            seq=event.seq,
            url=target.url,
            track_id=target.track_id,
            body=body.text,
            attempt=attempts_made,
            due_at=now + (self._first_delay_s if attempts_made == 0 else 0.0),
            created_at=now,
        )
