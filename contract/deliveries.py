"""Webhook deliveries on the wire: the record that travels through the delivery and retry topics, and
the status the dispatcher publishes (compacted, keyed by delivery id) for `GET /v1/jobs/{id}`.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

# Names webhook ids (`evt_<hex>`): stable per (job, event seq), so every retry and replay carries the same id.
_ID_NAMESPACE = uuid.UUID("6f1d2a0e-2b7c-4d8e-9a35-5e2b8c1f0d47")


def delivery_id(job_id: str, seq: int) -> str:
    # A hash, not the job id itself: Standard Webhooks ids must not be user-controlled (no `.`).
    return "evt_" + uuid.uuid5(_ID_NAMESPACE, f"{job_id}/{seq}").hex


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
    error: str | None = None  # why the last attempt failed


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
    error: str | None = None
    next_attempt_at: float | None = None
    updated_at: float = Field(default_factory=time.time)

    @property
    def order(self) -> tuple[int, int, int]:
        """Later replays, then more attempts, then a final state win over a pending one."""
        return (self.replay, self.attempts, self.state is not DeliveryState.PENDING)
