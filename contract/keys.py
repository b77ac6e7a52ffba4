"""API keys on the wire: a job's `owner` is the key's id, so the key itself never reaches Kafka.

Producers that write jobs to Kafka directly (and tests) set `owner` to `key_id(their key)`; `easel key-id`
prints it.
"""

from __future__ import annotations

import hashlib


def key_id(key: str) -> str:
    """The owner id of an API key: a prefix of its SHA-256, stable across instances and restarts."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]
