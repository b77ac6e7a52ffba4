"""The native job JSON names its status `status`; `state` is its deprecated alias (same value) for one release."""

from __future__ import annotations

import httpx

from contract.job import Job
from contract.lifecycle import queued_status
from dialects.native import render_status
from tests.processes import Stack

# Long enough on the tiny model to keep the one runner busy while the test looks at the queue.
LONG = {"prompt": "a slow one", "width": 512, "height": 512, "steps": 150}
SMALL = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 2}


def test_every_native_rendering_has_status_and_the_same_deprecated_state() -> None:
    body = render_status(queued_status(Job(prompt="x", id="j1", owner="o"), 1.0), "http://easel.test")
    assert body["status"] == body["state"] == "IN_QUEUE"


def test_submit_get_list_and_cancel_answer_status(client: httpx.Client) -> None:
    running = client.post("/v1/jobs", json=LONG).json()
    submitted = client.post("/v1/jobs", json=SMALL)
    assert submitted.status_code == 202
    queued = submitted.json()
    assert queued["status"] == queued["state"] == "IN_QUEUE"
    got = client.get(f"/v1/jobs/{queued['id']}").json()
    assert got["status"] == got["state"]
    listed = {job["id"]: job for job in client.get("/v1/jobs", params={"limit": 5}).json()["jobs"]}
    assert all(job["status"] == job["state"] for job in listed.values())
    assert queued["id"] in listed
    try:
        # While the runner is busy with the long job, the small one is queued: cancelling it ends it at once.
        cancelled = client.post(f"/v1/jobs/{queued['id']}/cancel")
        assert cancelled.status_code == 202
        if cancelled.json()["status"] != "COMPLETED":  # unless it was not queued any more (the runner was free)
            assert cancelled.json()["status"] == "CANCELLED"
            assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "CANCELLED"
    finally:
        client.post(f"/v1/jobs/{running['id']}/cancel")
    done = client.get(f"/v1/jobs/{running['id']}", params={"wait": 60}).json()
    assert done["status"] == done["state"] == "CANCELLED"


def test_the_openapi_status_schema_has_status_and_deprecated_state(stack: Stack) -> None:
    schema = httpx.get(f"{stack.base_url}/openapi.json").json()["components"]["schemas"]["JobStatus"]
    assert {"status", "state"} <= set(schema["required"])
    assert schema["properties"]["state"]["deprecated"] is True
