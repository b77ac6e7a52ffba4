"""Bytes on the wire: orjson for every value, UTF-8 job ids as keys."""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    return orjson.dumps(model.model_dump(mode="json", exclude_none=True))


def decode(model: type[M], raw: bytes) -> M:
    """Parse bytes into `model`; raises pydantic.ValidationError or orjson.JSONDecodeError."""
    return model.model_validate(orjson.loads(raw))


def key(job_id: str) -> bytes:
    return job_id.encode()
