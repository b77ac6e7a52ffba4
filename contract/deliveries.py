"""Webhook deliveries on the wire: the record that travels through the delivery and retry topics, the
status the dispatcher publishes (compacted, keyed by delivery id) for `GET /v1/jobs/{id}`, and an event
whose routing is retried.

Every Delivery record has a size bound under Kafka's 1 MiB: the body is at most MAX_WEBHOOK_BODY_BYTES
(the dispatcher truncates larger ones), and inside the record it is a JSON string, where escaping at most
doubles it (a body is orjson's output, which holds no raw control characters: only `"` and `\\` grow, to
two bytes each). The other fields are bounded by the job's own caps and ERROR_CHARS
(tests/test_dispatcher_reliability.py proves the sum).
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from contract.events import Event

# Names webhook ids (`evt_<hex>`): stable per (job, event seq), so every retry and replay carries the same id.
_ID_NAMESPACE = uuid.UUID("6f1d2a0e-2b7c-4d8e-9a35-5e2b8c1f0d47")
# The largest webhook body, JSON-encoded; EASEL_WEBHOOK_MAX_BODY_BYTES may lower it (256 KiB by default).
MAX_WEBHOOK_BODY_BYTES = 448 * 1024
DEFAULT_WEBHOOK_BODY_BYTES = 256 * 1024
# A failure reason kept in a record is cut to this many characters.
ERROR_CHARS = 500
# The header that marks a record on a retry topic as a PendingRoute rather than a Delivery.
RECORD_KIND_HEADER = "easel-webhook-record"
ROUTE_KIND = b"route"


def delivery_id(job_id: str, seq: int) -> str:
    # A hash, not the job id itself: Standard Webhooks ids must not be user-controlled (no `.`).
    return "evt_" + uuid.uuid5(_ID_NAMESPACE, f"{job_id}/{seq}").hex


def _cut(error: str | None) -> str | None:
    return error if error is None or len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 1] + "…"


Reason = Annotated[str | None, AfterValidator(_cut)]


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Delivery(BaseModel):
    """One webhook to POST. The body is rendered once, so every attempt sends the same bytes."""

    model_config = ConfigDict(frozen=True)

    id: str
    job_id: str
    owner: str
    event: str
    seq: int
    url: str
    track_id: str | None = None
    body: str
    attempt: int = 0  # attempts already made
    due_at: float = 0.0
    replay: int = 0  # how many times `easel webhooks replay` re-sent it
    created_at: float = Field(default_factory=time.time)
    error: Reason = None  # why the last attempt failed
    # Set on a dead letter whose record Kafka refused: the body (this many bytes) was dropped, nothing can be re-sent.
    dropped_body_bytes: int | None = None

    def after_failure(self, attempts: int, error: str, **changes: object) -> Delivery:
        """This delivery once `attempts` were made, the last failing with `error`."""
        return self.model_copy(update={"attempt": attempts, "error": _cut(error), **changes})

    def without_body(self, reason: str) -> Delivery:
        """The small dead letter of a delivery Kafka refused: who, what, where and why, never the body."""
        return self.model_copy(
            update={"body": "", "dropped_body_bytes": len(self.body.encode()), "error": _cut(reason)}
        )


class PendingRoute(BaseModel):
    """An event whose routing failed with an error of ours: routed again on the retry schedule.

    Each routing attempt counts as one of the delivery's attempts; the schedule used up, the event is
    dead-lettered (the job topics' dead-letter topic, with the reason).
    """

    model_config = ConfigDict(frozen=True)

    event: Event
    attempt: int  # routing attempts already made
    due_at: float = 0.0
    error: Reason = None


class DeliveryStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    job_id: str
    event: str
    seq: int
    state: DeliveryState
    attempts: int
    replay: int = 0
    status_code: int | None = None
    error: Reason = None
    next_attempt_at: float | None = None
    updated_at: float = Field(default_factory=time.time)

    @property
    def order(self) -> tuple[int, int, int]:
        """Later replays, then more attempts, then a final state win over a pending one."""
        return (self.replay, self.attempts, self.state is not DeliveryState.PENDING)
