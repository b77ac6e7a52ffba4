"""Every exception Easel raises on purpose, in one tree (in the spirit of httpx's exceptions module).

    EaselError
    ├── ClientError              a request the client can fix; each dialect renders it in its own shape
    │   ├── MalformedBody        400  the body is not a JSON object
    │   ├── Unauthorized         401  no or an unknown API key
    │   ├── NotFound             404  no such job (or route) for this key
    │   ├── MethodNotAllowed     405
    │   ├── Conflict             409  the job is not in a state this action needs
    │   ├── BodyTooLarge         413
    │   ├── InvalidField         422  names the field and the rule broken
    │   └── QueueFull            429  the key has too many jobs waiting
    ├── QueueError               Kafka (the job queue) failed us
    │   ├── KafkaUnavailable     not acknowledged in time: retriable; a client gets 503
    │   └── RecordRejected       refused for good (too large, not authorised): never retried
    ├── InvalidTransition        an event that a job in its current state cannot take
    └── SettingsError            an EASEL_* variable holds a value that cannot be used

Library errors (aiokafka, pydantic, aiohttp) are turned into these at the edge that meets them.
"""

from __future__ import annotations

__all__ = [
    "BodyTooLarge",
    "ClientError",
    "Conflict",
    "EaselError",
    "InvalidField",
    "InvalidTransition",
    "KafkaUnavailable",
    "MalformedBody",
    "MethodNotAllowed",
    "NotFound",
    "QueueError",
    "QueueFull",
    "RecordRejected",
    "SettingsError",
    "Unauthorized",
]


class EaselError(Exception):
    """The base of every exception Easel raises on purpose."""


class ClientError(EaselError):
    """A request the client can fix. `field` and `rule` name what to fix; `status` is the HTTP status."""

    status: int = 400
    code: str = "invalid_request"

    def __init__(
        self,
        rule: str,
        field: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        details: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{field}: {rule}" if field else rule)
        self.rule = rule
        self.field = field
        self.headers = headers
        self.details = details

    @property
    def message(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class MalformedBody(ClientError):
    status = 400
    code = "malformed_json"


class Unauthorized(ClientError):
    status = 401
    code = "unauthorized"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class Conflict(ClientError):
    status = 409
    code = "conflict"


class BodyTooLarge(ClientError):
    status = 413
    code = "too_large"


class InvalidField(ClientError):
    status = 422
    code = "invalid_request"


class QueueFull(ClientError):
    status = 429
    code = "queue_full"


class QueueError(EaselError):
    """Kafka, the job queue, did not do what was asked."""


class KafkaUnavailable(QueueError):
    """Kafka did not acknowledge in time. Retriable; the API answers 503."""


class RecordRejected(QueueError):
    """Kafka refused a record for good (over the size limit, not authorised). Retrying cannot help."""


class InvalidTransition(EaselError):
    """An event that a job in its current state cannot take (e.g. anything after a terminal one)."""


class SettingsError(EaselError, ValueError):
    """An environment variable holds a value that cannot be used."""
