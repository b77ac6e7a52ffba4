"""The state view's indexes and retention, fed records as the state topic carries them (no broker needed)."""

from __future__ import annotations

import time

from consumers.state_view import StateView
from contract.events import Event, EventType
from contract.job import Job
from contract.lifecycle import advance, queued_status
from contract.serialization import encode, key
from contract.settings import Settings
from contract.states import JobState, JobStatus

RETENTION_S = 60.0


def view() -> StateView:
    return StateView(Settings(retention_s=RETENTION_S))


def queued(job_id: str, owner: str, created_at: float | None = None) -> JobStatus:
    job = Job(prompt=f"prompt of {job_id}", id=job_id, owner=owner, created_at=created_at or time.time())
    return queued_status(job, job.created_at)


def started(status: JobStatus, runner_id: str = "runner-0") -> JobStatus:
    event = Event(job_id=status.job_id, seq=status.seq + 1, type=EventType.STARTED, ts=time.time(),
                  data={"runner_id": runner_id})
    return advance(status, event)


def completed(status: JobStatus, finished_at: float | None = None) -> JobStatus:
    outputs = [{"key": f"{status.job_id}/0.png", "content_type": "image/png", "width": 64, "height": 64, "seed": 1}]
    event = Event(job_id=status.job_id, seq=status.seq + 1, type=EventType.COMPLETED,
                  ts=finished_at or time.time(), data={"outputs": outputs, "seeds": [1]})
    return advance(status, event)


def failed(status: JobStatus) -> JobStatus:
    event = Event(job_id=status.job_id, seq=status.seq + 1, type=EventType.FAILED, ts=time.time(),
                  data={"error": "boom"})
    return advance(status, event)


def apply(state: StateView, *statuses: JobStatus) -> None:
    for status in statuses:
        state.apply(key(status.job_id), encode(status))


def ids(statuses: list[JobStatus]) -> set[str]:
    return {status.job_id for status in statuses}


def test_queued_running_and_live_are_per_owner() -> None:
    state = view()
    a1, a2, a3, b1 = queued("a1", "alice"), queued("a2", "alice"), queued("a3", "alice"), queued("b1", "bob")
    apply(state, a1, a2, a3, b1, started(a2), started(b1, "runner-1"), completed(started(a3)))
    assert ids(state.queued("alice")) == {"a1"}
    assert ids(state.running("alice")) == {"a2"}
    assert ids(state.live("alice")) == {"a1", "a2"}
    assert ids(state.running()) == {"a2", "b1"}
    assert ids(state.queued("bob")) == set() and state.queued("nobody") == []
    assert {s.job_id: s.state for s in state.owned("alice")} == {
        "a1": JobState.IN_QUEUE, "a2": JobState.IN_PROGRESS, "a3": JobState.COMPLETED}
    assert len(state) == 4


def test_a_finished_job_reads_back_whole_from_its_packed_record() -> None:
    state = view()
    done = completed(started(queued("j", "alice")))
    apply(state, done)
    assert state.get("j") == done
    assert state.live("alice") == [] and state.running() == []
    [summary] = state.owned("alice")
    assert (summary.state, summary.seq, summary.finished_at) == (JobState.COMPLETED, done.seq, done.finished_at)


def test_an_older_write_never_rolls_a_job_back() -> None:
    state = view()
    first = queued("j", "alice")
    running = started(first)
    done = completed(running)
    apply(state, done, running, first)
    assert state.get("j") == done and state.queued("alice") == [] and state.running() == []


def test_a_retried_job_moves_back_to_the_queue() -> None:
    state = view()
    job = failed(started(queued("j", "alice")))
    apply(state, job)
    requeued = advance(job, Event(job_id="j", seq=job.seq + 1, type=EventType.QUEUED, ts=time.time()))
    apply(state, requeued)
    assert ids(state.queued("alice")) == {"j"}
    [summary] = state.owned("alice")
    assert summary.retries == 1 and summary.finished_at is None


def test_recent_is_newest_first_and_limited() -> None:
    state = view()
    now = time.time()
    apply(state, completed(started(queued("old", "alice", now - 30))), queued("new", "alice", now - 10),
          completed(started(queued("mid", "alice", now - 20))), queued("other", "bob", now))
    assert [s.job_id for s in state.recent("alice", 2)] == ["new", "mid"]
    assert [s.job_id for s in state.recent("alice", 10)] == ["new", "mid", "old"]


def test_a_tombstone_removes_the_job_from_every_index() -> None:
    state = view()
    apply(state, started(queued("run", "alice")), completed(started(queued("done", "alice"))))
    state.apply(b"run", None)
    state.apply(b"done", None)
    state.apply(b"never-seen", None)
    assert state.get("run") is None and state.get("done") is None
    assert state.running() == [] and state.live("alice") == [] and state.owned("alice") == []
    assert len(state) == 0


def test_a_job_past_retention_is_hidden_then_due_then_forgotten() -> None:
    state = view()
    fresh = completed(started(queued("fresh", "alice")))
    old = completed(started(queued("old", "alice")), finished_at=time.time() - RETENTION_S - 1)
    running = started(queued("running", "alice"))
    apply(state, old, fresh, running)
    # Arrived already past retention (a replay): never loaded, only due.
    assert state.get("old") is None and {s.job_id for s in state.owned("alice")} == {"fresh", "running"}
    assert len(state) == 2
    assert state.due(10) == [("old", ("old/0.png",))]
    state.forget(["old"])
    assert state.due(10) == []


def test_a_retained_job_becomes_due_when_its_time_is_up() -> None:
    state = StateView(Settings(retention_s=0.2))
    apply(state, completed(started(queued("j", "alice"))), queued("waiting", "alice"))
    assert state.get("j") is not None and state.due(10) == []
    time.sleep(0.3)
    assert state.get("j") is None  # gone for clients before any purger ran
    assert state.due(10) == [("j", ("j/0.png",))]
    assert state.due(0) == []
    state.forget(["j"])
    assert len(state) == 1 and state.due(10) == [] and ids(state.queued("alice")) == {"waiting"}


def test_a_tombstone_read_back_on_replay_cancels_a_due_job() -> None:
    state = view()
    old = completed(started(queued("old", "alice")), finished_at=time.time() - RETENTION_S - 1)
    apply(state, old)
    state.apply(b"old", None)  # another instance purged it already
    assert state.due(10) == []


def test_queued_and_running_jobs_are_never_due() -> None:
    state = StateView(Settings(retention_s=0.0))
    apply(state, queued("q", "alice"), started(queued("r", "alice")))
    assert state.due(10) == [] and len(state) == 2


def test_an_unreadable_record_is_skipped() -> None:
    state = view()
    state.apply(b"x", b"{not json")
    state.apply(b"x", b'{"job_id": "x"}')
    assert len(state) == 0


def test_a_finished_record_is_validated_when_read_and_skipped_if_unsound() -> None:
    state = view()
    done = completed(started(queued("j", "ålice")))
    unsound = encode(done)[:-1] + b', "attempt": "many"}'  # what the indexes read is sound, the rest not
    state.apply(key("j"), unsound)
    [summary] = state.owned("ålice")  # indexed from the fields it needs, the rest unread yet
    assert summary.job_id == "j"
    assert state.get("j") is None  # read whole: skipped like a record unreadable on arrival
    assert state.owned("ålice") == [] and len(state) == 0 and state.due(10) == []
