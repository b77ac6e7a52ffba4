"""The contract without Kafka: settings, job validation, the lifecycle, serialization."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contract.errors import InvalidTransition, SettingsError
from contract.events import Event, EventType
from contract.job import Job, JobSpec
from contract.lifecycle import advance, queued_status
from contract.samplers import SAMPLERS, SCHEDULES, UNSUPPORTED_SCHEDULES
from contract.serialization import decode, encode
from contract.settings import Settings
from contract.states import JobState


def test_settings_read_typed_values_from_the_environment() -> None:
    settings = Settings.from_env(
        {"EASEL_PORT": "9000", "EASEL_API_KEYS": "a, b,", "EASEL_HOME": "/tmp/x", "EASEL_SUBMIT_TIMEOUT_S": "1.5"}
    )
    assert settings.port == 9000
    assert settings.api_keys == ("a", "b")
    assert settings.blob_location == "/tmp/x/blobs"  # follows EASEL_HOME unless set itself
    assert settings.submit_timeout_s == 1.5
    assert settings.bootstrap == "127.0.0.1:19092"


def test_settings_reject_bad_values_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="EASEL_PORT='eighty'"):
        Settings.from_env({"EASEL_PORT": "eighty"})


def test_settings_repr_hides_keys() -> None:
    text = repr(Settings(api_keys=("secret-one",), dev_key="secret-two"))
    assert "secret-one" not in text and "secret-two" not in text
    assert "api_keys='***'" in text


def test_every_unsupported_schedule_is_rejected_and_others_accepted() -> None:
    for sampler in SAMPLERS:
        for schedule in SCHEDULES:
            if schedule in UNSUPPORTED_SCHEDULES.get(sampler, ()):
                with pytest.raises(ValidationError, match="not available"):
                    JobSpec(prompt="x", sampler=sampler, schedule=schedule)
            else:
                assert JobSpec(prompt="x", sampler=sampler, schedule=schedule).sampler == sampler


def test_random_seed_means_null_or_minus_one() -> None:
    assert JobSpec(prompt="x").random_seed
    assert JobSpec(prompt="x", seed=-1).random_seed
    assert not JobSpec(prompt="x", seed=0).random_seed


def test_job_ids_are_restricted_to_safe_characters() -> None:
    with pytest.raises(ValidationError, match="id"):
        Job(prompt="x", id="../etc/passwd", owner="o")


def test_job_round_trips_through_json() -> None:
    job = Job(prompt="a fox", id="j1", owner="o", webhook={"url": "https://example.com/hook", "track_id": "t-1"})
    again = decode(Job, encode(job))
    assert again == job
    assert again.track_id == "t-1"


def _event(seq: int, type: EventType, **data: object) -> Event:
    return Event(job_id="j1", seq=seq, type=type, ts=100.0 + seq, data=data)


def test_lifecycle_folds_events_into_the_status() -> None:
    status = queued_status(Job(prompt="x", id="j1", owner="o", created_at=99.0), ts=99.0)
    status = advance(status, _event(1, EventType.STARTED, runner_id="r"))
    assert (status.state, status.attempt, status.started_at) == (JobState.IN_PROGRESS, 1, 101.0)
    progress = {"step": 1, "total": 2, "fraction": 0.5, "elapsed_s": 0.1, "eta_s": 0.1, "it_per_s": 10.0}
    status = advance(status, _event(2, EventType.PROGRESS, **progress))
    assert status.progress is not None and status.progress.step == 1
    output = {"key": "j1/0.png", "content_type": "image/png", "width": 64, "height": 64, "seed": 5}
    status = advance(status, _event(3, EventType.COMPLETED, outputs=[output], seeds=[5]))
    assert status.state is JobState.COMPLETED
    assert status.seq == 3 and status.finished_at == 103.0 and status.seeds == [5]


def test_nothing_follows_a_terminal_event() -> None:
    status = queued_status(Job(prompt="x", id="j1", owner="o"), ts=1.0)
    failed = advance(status, _event(1, EventType.FAILED, error="boom"))
    assert failed.error == "boom"
    for later in (EventType.STARTED, EventType.PROGRESS, EventType.COMPLETED, EventType.FAILED):
        with pytest.raises(InvalidTransition):
            advance(failed, _event(2, later))


def test_a_started_job_may_start_again_after_redelivery() -> None:
    status = queued_status(Job(prompt="x", id="j1", owner="o"), ts=1.0)
    status = advance(advance(status, _event(1, EventType.STARTED)), _event(2, EventType.STARTED))
    assert status.attempt == 2
    with pytest.raises(InvalidTransition):
        advance(status, _event(3, EventType.QUEUED))
