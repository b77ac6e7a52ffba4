"""The contract on the wire: topics, the canonical job, states, events and their serialization.

Every other package imports this one; it imports none of them.
"""

from contract.events import Event, EventType
from contract.job import Job, JobSpec, WebhookSpec
from contract.settings import Settings
from contract.states import TERMINAL_STATES, JobState, JobStatus

__all__ = [
    "TERMINAL_STATES",
    "Event",
    "EventType",
    "Job",
    "JobSpec",
    "JobState",
    "JobStatus",
    "Settings",
    "WebhookSpec",
]
