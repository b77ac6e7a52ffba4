"""Every exception Easel raises on purpose, in one tree (in the spirit of httpx's exceptions module).

    EaselError
    ├── ClientError              a request the client can fix; each dialect renders it in its own shape
    │   ├── MalformedBody        400  the body is not a JSON object
    │   ├── InvalidParameter     400  a query parameter or header breaks a rule
    │   ├── Unauthorized         401  no or an unknown API key
    │   ├── NotFound             404  no such job (or route) for this key
    │   ├── MethodNotAllowed     405
    │   ├── Conflict             409  the job is not in a state this action needs
    │   ├── BodyTooLarge         413
    │   ├── InvalidField         422  names the field and the rule broken
    │   │   └── UnknownName           a name (sampler, scheduler, model) that is none of those offered
    │   ├── QueueFull            429  the key has too many jobs waiting
    │   └── TooManyStreams       429  the key has too many live streams open
    ├── QueueError               Kafka (the job queue) failed us
    │   ├── KafkaUnavailable     not acknowledged in time: retriable; a client gets 503
    │   │   └── SubmitUnconfirmed    a submit not confirmed in time: it settles later (runs, or ends FAILED)
    │   └── RecordRejected       refused for good (too large, not authorised): never retried
    │       └── SubmitRefused        a submit's record refused: the job never runs
    ├── InvalidTransition        an event that a job in its current state cannot take
    └── SettingsError            an EASEL_* variable holds a value that cannot be used

Library errors (aiokafka, pydantic, aiohttp) are turned into these at the edge that meets them. The statuses
above are the native API's; a dialect may answer another (RunPod and ModelsLab answer 400 for a 422).
"""

from __future__ import annotations

__all__ = [
    "INTERNAL_MESSAGE",
    "UNAVAILABLE_MESSAGE",
    "BodyTooLarge",
    "ClientError",
    "Conflict",
    "EaselError",
    "InvalidField",
    "InvalidParameter",
    "InvalidTransition",
    "KafkaUnavailable",
    "MalformedBody",
    "MethodNotAllowed",
    "NotFound",
    "QueueError",
    "QueueFull",
    "RecordRejected",
    "SettingsError",
    "SubmitRefused",
    "SubmitUnconfirmed",
    "TooManyStreams",
    "Unauthorized",
    "UnknownName",
]

# What a client is told when the fault is not its own. Never the exception's text: that may carry internal detail.
UNAVAILABLE_MESSAGE = "the job queue (Kafka) is unavailable; retry later"
INTERNAL_MESSAGE = "internal error"


class EaselError(Exception):
    """The base of every exception Easel raises on purpose."""


class ClientError(EaselError):
    """A request the client can fix. `rule` says what is wrong, `field` where; `status` is the HTTP status.

    The message is the rule alone ("invalid API key", field `key`), except for the errors about one field's
    value, whose message names the field ("width: must be a multiple of 8").
    """

    status: int = 400
    code: str = "invalid_request"
    names_field: bool = False  # the message starts with the field

    def __init__(
        self,
        rule: str,
        field: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        details: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{field}: {rule}" if field and self.names_field else rule)
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


class InvalidParameter(ClientError):
    status = 400
    code = "invalid_request"
    names_field = True


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
    """`details` lists every problem found ({"field", "rule", "type"}) when there were several."""

    status = 422
    code = "invalid_request"
    names_field = True


class UnknownName(InvalidField):
    """A name that is none of those offered (A1111 answers 404 `Sampler not found` for a sampler)."""


class QueueFull(ClientError):
    status = 429
    code = "queue_full"

    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"Rate limit exceeded. Maximum {limit} queued requests allowed.",
            headers={"Retry-After": str(retry_after_s)},
        )
        self.retry_after_s = retry_after_s


class TooManyStreams(ClientError):
    """The key holds as many WebSocket / SSE streams as it may; one must close first."""

    status = 429
    code = "too_many_streams"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this key has {limit} live streams open, the most allowed; close one first", "key",
            headers={"Retry-After": "5"},
        )


class QueueError(EaselError):
    """Kafka, the job queue, did not do what was asked."""


class KafkaUnavailable(QueueError):
    """Kafka did not acknowledge in time. Retriable; the API answers 503."""


class RecordRejected(QueueError):
    """Kafka refused a record for good (over the size limit, not authorised). Retrying cannot help."""


class SubmitUnconfirmed(KafkaUnavailable):
    """Kafka did not confirm the submit in time. It goes on in the background: the job runs, or ends FAILED."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Kafka did not confirm job {job_id} in time")
        self.job_id = job_id


class SubmitRefused(RecordRejected):
    """Kafka refused one of the job's records for good. The job never runs; it ends FAILED where Kafka allows."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Kafka refused a record of job {job_id}")
        self.job_id = job_id


class InvalidTransition(EaselError):
    """An event that a job in its current state cannot take (e.g. anything after a terminal one)."""


class SettingsError(EaselError, ValueError):
    """An environment variable holds a value that cannot be used."""
