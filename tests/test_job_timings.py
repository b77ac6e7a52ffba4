"""The runner says where each job's time went: one `job timings` log line with pipe, encode, store and publish."""

from __future__ import annotations

import json
import time

import httpx

from tests.processes import Stack

FIELDS = ("pipe_ms", "encode_ms", "store_ms", "publish_ms")


def timings_lines(log_text: str, job_id: str) -> list[dict[str, object]]:
    lines = (json.loads(line) for line in log_text.splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == "job timings" and line.get("job_id") == job_id]


def test_a_completed_job_logs_its_timings_once(stack: Stack, client: httpx.Client, job_spec: dict[str, object]) -> None:
    job_id = client.post("/v1/jobs", json=job_spec).json()["id"]
    status = client.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
    assert status["state"] == "COMPLETED", status
    runner = next(p for p in stack.processes if p.log_path.name == "runner-0.log")
    deadline = time.monotonic() + 30  # written before the outcome, but the runner's output may lag the answer
    while not (lines := timings_lines(runner.output(), job_id)) and time.monotonic() < deadline:
        time.sleep(0.1)

    [line] = lines
    assert line["level"] == "info" and line["outcome"] == "completed"
    for field in FIELDS:
        value = line[field]
        assert isinstance(value, (int, float)) and value >= 0, (field, line)
