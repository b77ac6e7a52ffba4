"""A1111 sampler and schedule names as clients send them, → Easel's sampler and schedule."""

from __future__ import annotations

from contract.errors import InvalidField, UnknownName
from contract.samplers import (
    REFUSED_SAMPLERS,
    SAMPLERS,
    SCHEDULES,
    Sampler,
    find_sampler,
    find_schedule,
    schedule_keys,
)


def resolve(sampler: str | None, scheduler: str | None, default: str = "Euler") -> tuple[str, str]:
    """(sampler, schedule) from A1111 fields; raises UnknownName (or InvalidField) naming the valid values."""
    if sampler is not None and not isinstance(sampler, str):
        raise InvalidField("must be a string", "sampler_name")
    if scheduler is not None and not isinstance(scheduler, str):
        raise InvalidField("must be a string", "scheduler")
    name = (sampler or default).strip()
    schedule = _schedule(scheduler)
    found = find_sampler(name)
    if found is None:
        found, suffix_schedule = _legacy_name(name)
        if schedule == "automatic":  # an explicit scheduler wins over the name's suffix
            schedule = suffix_schedule
    if found is None:
        why = REFUSED_SAMPLERS.get(name)
        problem = f"sampler {name!r} is not available: {why}" if why else f"unknown sampler {name!r}"
        raise UnknownName(f"{problem}; valid: {', '.join(SAMPLERS)}", "sampler_name")
    return found.name, schedule


def _legacy_name(name: str) -> tuple[Sampler | None, str]:
    """Pre-1.9 combined names ("DPM++ 2M Karras") carry the schedule as a suffix, in any case."""
    lowered = name.lower()
    for key in schedule_keys():
        if lowered.endswith(" " + key):
            found = find_sampler(name[: -len(key) - 1])
            schedule = find_schedule(key)
            if found is not None and schedule is not None:
                return found, schedule.name
    return None, "automatic"


def _schedule(scheduler: str | None) -> str:
    if scheduler is None or scheduler == "":
        return "automatic"
    schedule = find_schedule(scheduler)
    if schedule is None:
        raise UnknownName(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULES)}", "scheduler")
    return schedule.name
