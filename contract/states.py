"""Job states (RunPod's names) and the latest-known status of a job, as kept on the state topic."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from contract.job import EchoedInput, WebhookSpec


class JobState(StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
)


class Progress(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: int
    total: int
    fraction: float
    elapsed_s: float
    eta_s: float
    it_per_s: float


class Output(BaseModel):
    """A stored image: its blob key, never its bytes."""

    model_config = ConfigDict(frozen=True)

    key: str
    content_type: str
    width: int
    height: int
    seed: int
    # The safety checker flagged this image (it was replaced by a black one); False when not checked.
    nsfw: bool = False


class JobStatus(BaseModel):
    """The state topic's value for one job. `seq` is the seq of the last event folded in."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    owner: str
    state: JobState
    seq: int
    updated_at: float
    created_at: float
    track_id: str | None = None
    dialect: str = "native"
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int = 0
    runner_id: str | None = None
    progress: Progress | None = None
    outputs: list[Output] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    error: str | None = None
    # What was asked, so every dialect can render its answer (ModelsLab `meta`, A1111 `parameters`)
    # from the status alone; `client_input` is the request as the client sent it (RunPod echoes it).
    spec: dict[str, Any] = Field(default_factory=dict)
    client_input: EchoedInput | None = None
    webhook: WebhookSpec | None = None
    retries: int = 0  # how often a failed or timed-out job was put back in the queue (RunPod /retry)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def nsfw_content_detected(self) -> list[bool]:
        """Per image: did the safety checker flag it. Derived from the outputs, so it travels with them."""
        return [output.nsfw for output in self.outputs]

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal
