"""The dispatcher's pure parts: retry schedule, Retry-After, progress throttle, signing keys, dialect bodies."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook

from consumers.webhooks.bodies import render_body
from consumers.webhooks.router import ProgressThrottle
from consumers.webhooks.schedule import RetrySchedule
from consumers.webhooks.sender import _retry_after
from consumers.webhooks.signing import Signer
from contract.deliveries import delivery_id
from contract.errors import SettingsError
from contract.events import Event, EventType
from contract.settings import Settings
from contract.states import JobState, JobStatus, Output

SVIX = RetrySchedule.from_settings(Settings())


def secret(seed: bytes) -> str:
    return "whsec_" + base64.b64encode(seed * 4).decode()


def test_the_default_schedule_is_svix_and_each_delay_has_its_retry_topic() -> None:
    assert SVIX.delays_s == (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    assert SVIX.tiers_ms == [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000]
    assert [SVIX.next_delay_s(n, None) for n in range(1, 9)] == [5, 300, 1800, 7200, 18000, 36000, 36000, None]


def test_retry_after_is_honoured_when_longer_up_to_the_longest_delay() -> None:
    assert SVIX.next_delay_s(1, 60) == 60 and SVIX.tier_ms(60) == 300_000  # waits in the 5 min topic, due at 60 s
    assert SVIX.next_delay_s(1, 2) == 5  # shorter: the schedule wins
    assert SVIX.next_delay_s(1, 10**9) == 36000  # capped
    assert _retry_after("120") == 120
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= (_retry_after(http_date) or 0) <= 31
    assert _retry_after("soon") is None


def test_a_bad_schedule_is_refused() -> None:
    with pytest.raises(SettingsError, match="EASEL_WEBHOOK_RETRY_SCHEDULE_S"):
        RetrySchedule.from_settings(Settings(webhook_retry_schedule_s=("0", "five")))


def test_progress_is_throttled_per_job_and_terminal_events_always_pass() -> None:
    throttle = ProgressThrottle(0.5)

    def progress(job: str, ts: float) -> Event:
        return Event(job_id=job, seq=1, type=EventType.PROGRESS, ts=ts)

    admitted = [throttle.admit(progress("a", t)) for t in (10.0, 10.2, 10.49, 10.5, 10.6)]
    assert admitted == [True, False, False, True, False]
    assert throttle.admit(progress("b", 10.6))  # another job has its own budget
    assert throttle.admit(Event(job_id="a", seq=9, type=EventType.COMPLETED, ts=10.7))


def test_webhook_ids_are_stable_per_event_and_carry_no_dots() -> None:
    assert delivery_id("job.1", 4) == delivery_id("job.1", 4) != delivery_id("job.1", 5)
    assert delivery_id("job.1", 4).startswith("evt_") and "." not in delivery_id("job.1", 4)


def test_a_key_with_its_own_secret_is_signed_with_it() -> None:
    signer = Signer(secret(b"global-secret-24"), {"key-a": secret(b"key-a-secret-123")})
    body = '{"x":1}'
    own = signer.headers("key-a", "evt_1", body)
    Webhook(secret(b"key-a-secret-123")).verify(body, own)
    other = signer.headers("key-b", "evt_1", body)
    Webhook(secret(b"global-secret-24")).verify(body, other)
    with pytest.raises(SettingsError, match="whsec_"):
        Signer("not-a-secret", {})


def finished(dialect: str, state: JobState, **changes: object) -> JobStatus:
    return JobStatus(
        job_id="j1", owner="o", state=state, seq=5, updated_at=3.0, created_at=1.0, started_at=1.5, finished_at=3.0,
        dialect=dialect, spec={"prompt": "p", "width": 64, "height": 64, "num_images": 1, "steps": 2, "seed": 5},
        outputs=[Output(key="j1/0.png", content_type="image/png", width=64, height=64, seed=5)]
        if state is JobState.COMPLETED else [],
        **changes,
    )


def test_runpod_bodies_are_the_status_envelope_with_input_and_webhook_echoed() -> None:
    status = finished("runpod", JobState.COMPLETED, client_input={"prompt": "p"})
    event = Event(job_id="j1", seq=5, type=EventType.COMPLETED, ts=3.0)
    body = render_body("runpod", event, status, "https://example.com/h", "t-1", Settings())
    assert body["id"] == "j1" and body["status"] == "COMPLETED"
    assert body["delayTime"] == 500 and body["executionTime"] == 1500
    assert body["output"]["image_url"].startswith("http") and "/files/j1/0" in body["output"]["image_url"]
    assert body["input"] == {"prompt": "p"} and body["webhook"] == "https://example.com/h" and body["track_id"] == "t-1"


def test_modelslab_failures_say_failed_and_native_bodies_are_typed_envelopes() -> None:
    failed = finished("modelslab", JobState.FAILED, error="boom")
    event = Event(job_id="j1", seq=5, type=EventType.FAILED, ts=3.0)
    body = render_body("modelslab", event, failed, "https://example.com/h", "t-2", Settings())
    assert body == {"status": "failed", "id": "j1", "message": "boom", "track_id": "t-2"}
    native = render_body("native", event, finished("native", JobState.FAILED, error="boom"), "u", None, Settings())
    assert native["type"] == "job.failed" and native["data"]["error"] == "boom" and "track_id" not in native
