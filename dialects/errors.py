from __future__ import annotations

from pydantic import ValidationError


class DialectError(ValueError):
    """A request a dialect cannot turn into a job: names the field and the rule broken."""

    def __init__(self, field: str, rule: str, status: int = 400) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
        self.status = status

    @classmethod
    def from_validation(cls, exc: ValidationError, prefix: str = "") -> DialectError:
        """The first problem pydantic found with the job, named as the dialect's client named it."""
        first = exc.errors()[0]
        field = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "") or "body"
        return cls(field, str(first["msg"]).removeprefix("Value error, "))
