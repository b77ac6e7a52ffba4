"""How events move a job's status. The one place where state transitions are checked."""

from __future__ import annotations

from contract.errors import InvalidTransition
from contract.events import Event, EventType
from contract.job import Job, JobSpec
from contract.states import JobState, JobStatus, Output, Progress

_ALLOWED: dict[JobState, frozenset[EventType]] = {
    JobState.IN_QUEUE: frozenset(EventType) - {EventType.QUEUED},
    # A redelivered job starts again: IN_PROGRESS may take `started` once more.
    JobState.IN_PROGRESS: frozenset(EventType) - {EventType.QUEUED},
    # A retry (RunPod /retry) puts a failed or timed-out job back in the queue under the same id.
    JobState.FAILED: frozenset({EventType.QUEUED}),
    JobState.TIMED_OUT: frozenset({EventType.QUEUED}),
}
RETRYABLE = frozenset({JobState.FAILED, JobState.TIMED_OUT})
_MOST_STEPS = int(JobSpec.model_json_schema()["properties"]["steps"]["maximum"])
_TERMINAL_EVENT_OF = {event.state: event for event in EventType if event.is_terminal}


def queued_status(job: Job, ts: float) -> JobStatus:
    return JobStatus(
        job_id=job.id,
        owner=job.owner,
        state=JobState.IN_QUEUE,
        seq=0,
        updated_at=ts,
        created_at=job.created_at,
        track_id=job.track_id,
        dialect=job.dialect,
        spec=job.model_dump(mode="json", include=set(JobSpec.model_fields)),
        client_input=job.client_input,
        webhook=job.webhook,
    )


def events_per_attempt(status: JobStatus) -> int:
    """The most events one attempt at the job writes: `started`, a progress event and a preview per step, its
    outcome. A refiner under a second-order scheduler counts one step more (gpu_runner/steps.py); the runner's
    event writer drops progress and previews past this, so it holds whatever the pipeline does."""
    steps = status.spec.get("steps")
    if not isinstance(steps, int):  # a status without its parameters: any job's most
        steps = _MOST_STEPS
    return 2 * (steps + 1) + 2


def resumed(status: JobStatus) -> JobStatus:
    """The status a new attempt at a redelivered job numbers its events from.

    A running job's status is written only now and then (its progress and previews at once: see
    producers/events.py), so an earlier attempt that crashed may have written events past the status the
    state topic kept, and subscribers skip any seq they saw already. An IN_PROGRESS job goes on a whole
    attempt's worth of seqs further: above anything that attempt wrote. Seqs stay increasing, not contiguous.
    """
    if status.state is not JobState.IN_PROGRESS:
        return status
    return status.model_copy(update={"seq": status.seq + events_per_attempt(status)})


def job_of(status: JobStatus, ts: float) -> Job:
    """The request message again, from a status (to retry it): same id, same parameters, queued at `ts`."""
    return Job(
        **status.spec,
        id=status.job_id,
        owner=status.owner,
        created_at=ts,
        webhook=status.webhook,
        dialect=status.dialect,
        client_input=status.client_input,
    )


def terminal_event(status: JobStatus) -> Event:
    """The terminal event that led to a terminal `status`, again (same seq), to publish it once more."""
    event_type = _TERMINAL_EVENT_OF[status.state]
    if event_type is EventType.COMPLETED:
        outputs = [output.model_dump(mode="json") for output in status.outputs]
        data: dict[str, object] = {
            "outputs": outputs, "seeds": status.seeds, "nsfw_content_detected": status.nsfw_content_detected
        }
    else:
        data = {"error": status.error or event_type.value}
        if status.outputs:  # a job a client stopped, with what it had made by then
            data |= {"outputs": [output.model_dump(mode="json") for output in status.outputs], "seeds": status.seeds}
    ts = status.finished_at or status.updated_at
    return Event(job_id=status.job_id, seq=status.seq, type=event_type, ts=ts, data=data)


def slimmed(status: JobStatus) -> JobStatus:
    """The status without what the client sent (its parameters and echoed request): the smallest it can be."""
    return status.model_copy(update={"spec": {}, "client_input": None, "progress": None})


def advance(status: JobStatus, event: Event) -> JobStatus:
    """Fold `event` into `status`. Raises InvalidTransition for moves the lifecycle forbids."""
    allowed = _ALLOWED.get(status.state, frozenset())
    if event.type not in allowed:
        raise InvalidTransition(f"{status.state} cannot take {event.type}")
    changes: dict[str, object] = {"seq": event.seq, "updated_at": event.ts}
    if (state := event.type.state) is not None:
        changes["state"] = state
    if event.type is EventType.QUEUED:  # a retry: the earlier attempt's outcome is cleared
        changes |= {
            "retries": status.retries + 1,
            "started_at": None,
            "finished_at": None,
            "progress": None,
            "outputs": [],
            "seeds": [],
            "error": None,
        }
    elif event.type is EventType.STARTED:
        changes |= {
            "started_at": event.ts,
            "attempt": status.attempt + 1,
            "runner_id": event.data.get("runner_id"),
            "progress": None,
        }
    elif event.type is EventType.PROGRESS:
        changes["progress"] = Progress.model_validate(event.data)
    elif event.type is EventType.COMPLETED or (event.type is EventType.CANCELLED and "outputs" in event.data):
        # A cancelled job may carry the images it had when it stopped (A1111's interrupt answers them).
        changes["outputs"] = [Output.model_validate(o) for o in event.data["outputs"]]
        changes["seeds"] = list(event.data.get("seeds", []))
    if event.type.is_terminal:
        changes["finished_at"] = event.ts
        if event.type is not EventType.COMPLETED:
            changes["error"] = event.data.get("error")
    return status.model_copy(update=changes)
