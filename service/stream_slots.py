"""Per-key caps on the live streams (WebSocket and SSE) held open on this API instance.

A stream costs a connection, a bounded queue and a share of the hub's fan-out for as long as it lasts, so a
key may hold at most EASEL_MAX_STREAMS_PER_KEY at once; one more is refused with TooManyStreams (429).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterable, Callable, Iterator, Mapping
from contextlib import contextmanager

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from contract.errors import TooManyStreams


class StreamSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no cap
        self._held: Counter[str] = Counter()

    def take(self, owner: str) -> Callable[[], None]:
        """One slot for `owner`, and the function that gives it back (once); TooManyStreams when none is left."""
        if self.limit and self._held[owner] >= self.limit:
            raise TooManyStreams(self.limit)
        self._held[owner] += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self._held[owner] -= 1
                if not self._held[owner]:
                    del self._held[owner]

        return give_back

    @contextmanager
    def hold(self, owner: str) -> Iterator[None]:
        """A slot for the duration of the block."""
        give_back = self.take(owner)
        try:
            yield
        finally:
            give_back()


class HeldStreamingResponse(StreamingResponse):
    """A streaming response that gives its slot back once it has ended, however it ended.

    Released here rather than in the body's generator: a client that leaves before the body starts never runs it.
    """

    def __init__(
        self, content: AsyncIterable[bytes], give_back: Callable[[], None], media_type: str, headers: Mapping[str, str]
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._give_back = give_back

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._give_back()
