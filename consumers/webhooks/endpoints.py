"""Endpoints that answered 410 Gone: no more deliveries go to them until a replay re-enables them."""

from __future__ import annotations

import time

import orjson
from aiokafka import AIOKafkaProducer

from consumers.topic_mirror import TopicMirror
from contract.settings import Settings
from contract.topics import Topics
from producers import publish


class Endpoints:
    def __init__(self, settings: Settings) -> None:
        self._topic = Topics(settings.topic_prefix).webhook_endpoints
        self._disabled: dict[str, str] = {}  # url → why
        self._mirror = TopicMirror(settings, self._topic, self._apply, "easel-webhook-endpoints")

    async def start(self) -> None:
        await self._mirror.start()

    async def stop(self) -> None:
        await self._mirror.stop()

    async def disabled(self, url: str) -> str | None:
        """Why `url` is disabled, or None. Syncs first, so a re-enable written before now is seen."""
        if url not in self._disabled:
            return None
        await self._mirror.sync()
        return self._disabled.get(url)

    async def disable(self, producer: AIOKafkaProducer, url: str, reason: str) -> None:
        self._disabled[url] = reason
        value = orjson.dumps({"url": url, "reason": reason, "at": time.time()})
        await publish(producer, self._topic, value, url.encode(), what="a disabled endpoint")

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        if raw_key is None:
            return
        url = raw_key.decode(errors="replace")
        if raw_value is None:
            self._disabled.pop(url, None)
        else:
            self._disabled[url] = str(orjson.loads(raw_value).get("reason", "disabled"))


async def enable(producer: AIOKafkaProducer, topics: Topics, url: str) -> None:
    """A tombstone: the endpoint takes deliveries again."""
    await publish(producer, topics.webhook_endpoints, None, url.encode(), what="a re-enabled endpoint")
