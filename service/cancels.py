"""Cancelling a job from the API: runners are asked to stop it, and a queued one ends CANCELLED at once.

A running job stops at its runner's next step, which writes its CANCELLED. A queued one has no runner to write
it until one reaches its request (maybe long after), so the API writes it itself. That is safe against a runner
taking the job at the same moment:
- the cancel command goes to the control topic first, so a runner that takes the job stops before it starts (or
  at its first step) and ends it CANCELLED too;
- the API's CANCELLED is numbered past every seq one attempt from the queued status can write
  (`events_per_attempt`): views never go back to a lower seq and streams skip what is below the last one seen,
  so the API's CANCELLED stands whatever that runner writes after it;
- a runner that reaches the request later finds the job finished and only repeats its terminal event.
The API wins the race. One corner remains: a job that a runner took between the API's read and its write, and
finished before its control mirror saw the command, has a COMPLETED record at a lower seq; views show CANCELLED,
but a view rebuilt after compaction (which keeps the later record) could show COMPLETED, and its images stay.
"""

from __future__ import annotations

import time

from contract.events import Event, EventType
from contract.lifecycle import advance, events_per_attempt
from contract.serialization import encode, key
from contract.states import JobState, JobStatus
from producers.publish import publish
from service.state import AppState
from service.submission import caught_up, request_cancel

CANCELLED_IN_QUEUE = "cancelled before it started"


async def cancel(app: AppState, status: JobStatus) -> JobStatus:
    """Ask the runners to stop the job; end it CANCELLED now if it is queued. Its status after that."""
    await request_cancel(app, status.job_id)  # first: see the module's docstring
    latest = (await caught_up(app)).get(status.job_id) or status
    if latest.state is not JobState.IN_QUEUE:
        return latest
    event = Event(
        job_id=latest.job_id, seq=latest.seq + events_per_attempt(latest) + 1, type=EventType.CANCELLED,
        ts=time.time(), data={"error": CANCELLED_IN_QUEUE},
    )
    cancelled = advance(latest, event)
    producer, topics, within_s = app.kafka.producer, app.kafka.topics, app.settings.submit_timeout_s
    assert producer is not None, "request_cancel has published with it"
    job_key = key(latest.job_id)
    # Its status before its event, as every writer does.
    await publish(producer, topics.state, encode(cancelled), job_key, what="the cancel", within_s=within_s)
    await publish(producer, topics.events, encode(event), job_key, what="the cancel", within_s=within_s)
    # Read-your-writes: a status read right after this answer must not see the job queued.
    await app.kafka.view.wait_for(latest.job_id, lambda s: s.seq >= cancelled.seq, within_s)
    return cancelled
