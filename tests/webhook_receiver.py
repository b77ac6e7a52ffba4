"""A real webhook receiver on 127.0.0.1 (aiohttp), run on the test's event loop.

Each path answers from its own script of responses (the last one repeats) and records what it got.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._scripts: dict[str, list[Answer]] = {}
        self._received: dict[str, list[Received]] = {}
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def script(self, path: str, *answers: Answer) -> None:
        self._scripts[path] = list(answers)

    def received(self, path: str) -> list[Received]:
        return list(self._received.get(path, []))

    async def wait_for(self, path: str, count: int, timeout_s: float = 60.0) -> list[Received]:
        async with asyncio.timeout(timeout_s):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self._received.get(path, [])) >= count)
        return self.received(path)

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        async with self._arrived:
            self._received.setdefault(path, []).append(
                Received({k.lower(): v for k, v in request.headers.items()}, body, time.time())
            )
            self._arrived.notify_all()
        script = self._scripts.get(path) or [Answer()]
        answer = script.pop(0) if len(script) > 1 else script[0]
        return web.Response(status=answer.status, headers=answer.headers)
