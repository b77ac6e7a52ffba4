"""Trying again after Kafka failed us: one backoff policy, and one way to keep at something until it works.

Waits grow exponentially from FIRST_WAIT_S up to MAX_WAIT_S, each drawn at random below that bound
(full jitter), so processes that lost Kafka together do not all come back in the same instant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import backoff
import structlog

from contract.errors import RecordRejected

log = structlog.get_logger(__name__)
FIRST_WAIT_S = 0.25
MAX_WAIT_S = 5.0
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Details = dict[str, Any]


def retried(giveup: Callable[[Exception], bool], **handlers: Any) -> Callable[[F], F]:
    """Retry the decorated coroutine on any Exception but those `giveup` accepts, with the policy above.

    It never gives up on its own: bound it with a deadline, or mean "forever".
    """
    return backoff.on_exception(
        backoff.expo, Exception, giveup=giveup, factor=FIRST_WAIT_S, max_value=MAX_WAIT_S, logger=None, **handlers
    )


def _first_failure(details: Details) -> None:
    if details["tries"] == 1:  # once per outage, not once per try
        _attempt, what, fields = details["args"]
        log.warning("Kafka not reachable, retrying", task=what, error=repr(details["exception"])[:200], **fields)


def _recovered(details: Details) -> None:
    if details["tries"] > 1:
        _attempt, what, fields = details["args"]
        log.info("Kafka reachable again", task=what, tries=details["tries"], **fields)


@retried(lambda exc: isinstance(exc, RecordRejected), on_backoff=_first_failure, on_success=_recovered)
async def _until_done(attempt: Callable[[], Awaitable[T]], what: str, fields: dict[str, object]) -> T:
    return await attempt()


async def retry_forever(attempt: Callable[[], Awaitable[T]], what: str, **fields: object) -> T:
    """`attempt()`'s result, calling it again after every failure until one succeeds.

    For background connectors and for writes that must happen. `what` names the task in the one log
    line an outage gets (plus one when it is over). A record Kafka refused for good is not retried.
    """
    return await _until_done(attempt, what, fields)
