"""Commands on the control topic, keyed by job id."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ControlCommand(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    action: Literal["cancel"]
    ts: float = Field(default_factory=time.time)
