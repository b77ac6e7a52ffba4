"""A1111 sampler and schedule names as clients send them, → Easel's sampler and schedule."""

from __future__ import annotations

from contract.job import SAMPLERS, SCHEDULES
from dialects.errors import DialectError

# A1111 labels and aliases of schedule types (v1.9+), lower-cased.
_SCHEDULE_ALIASES = {
    "automatic": "automatic",
    "uniform": "uniform",
    "karras": "karras",
    "exponential": "exponential",
    "sgm_uniform": "sgm_uniform",
    "sgm uniform": "sgm_uniform",
    "sgmuniform": "sgm_uniform",
}
# Legacy combined names ("DPM++ 2M Karras") carry the schedule as a suffix.
_SUFFIXES = ("sgm_uniform", "sgm uniform", "karras", "exponential", "uniform")


def resolve(sampler: str | None, scheduler: str | None, default: str = "Euler") -> tuple[str, str]:
    """(sampler, schedule) from A1111 fields; raises DialectError naming the valid values."""
    if sampler is not None and not isinstance(sampler, str):
        raise DialectError("sampler_name", "must be a string", status=422)
    if scheduler is not None and not isinstance(scheduler, str):
        raise DialectError("scheduler", "must be a string", status=422)
    name = (sampler or default).strip()
    schedule = _schedule(scheduler)
    lowered = name.lower()
    for suffix in _SUFFIXES:
        if lowered.endswith(" " + suffix) and name[: -len(suffix) - 1] in SAMPLERS:
            name = name[: -len(suffix) - 1]
            if schedule == "automatic":
                schedule = _SCHEDULE_ALIASES[suffix]
            break
    if name not in SAMPLERS:
        raise DialectError("sampler_name", f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return name, schedule


def _schedule(scheduler: str | None) -> str:
    if scheduler is None or scheduler == "":
        return "automatic"
    schedule = _SCHEDULE_ALIASES.get(scheduler.strip().lower())
    if schedule is None:
        raise DialectError("scheduler", f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULES)}")
    return schedule
