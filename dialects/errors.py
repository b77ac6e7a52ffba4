"""Transitional, until dialects/samplers.py raises `contract.errors` exceptions itself; then delete this module.

Its old spelling `DialectError(field, rule, status)`: status 400 meant a name that is none of those offered,
422 a value of the wrong type.
"""

from __future__ import annotations

from contract.errors import InvalidField, UnknownName


def DialectError(field: str, rule: str, status: int = 400) -> InvalidField:
    return UnknownName(rule, field) if status == 400 else InvalidField(rule, field)
