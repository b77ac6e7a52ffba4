"""One HTTP attempt at a delivery: signed, no redirects, bounded in time, in concurrency, per host.

Only 2xx is success. Failing to connect, to resolve the host's name (`dns: ...`) or to get an answer
in time is retried on the schedule; only the SSRF rules' refusal is final. A host's slots are taken
before a global one, so deliveries queued behind a slow receiver hold no global slot and every other
receiver keeps its pace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
import structlog

from consumers.webhooks import metrics
from consumers.webhooks.addresses import AddressPolicy, BlockedAddress
from consumers.webhooks.connector import vetted_connector
from consumers.webhooks.signing import Signer
from contract.deliveries import Delivery

log = structlog.get_logger(__name__)
USER_AGENT = "Easel-Webhooks/0.1"
MAX_RESPONSE_BYTES = 64 * 1024  # read (and drop) this much, so the connection can be reused


@dataclass(frozen=True)
class Attempt:
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    blocked: bool = False  # the SSRF rules refused the URL or an address its name resolves to: never retried
    attempted: bool = True  # False when nothing was sent (the endpoint is disabled)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410

    @property
    def outcome(self) -> str:
        if self.ok:
            return "delivered"
        if self.blocked:
            return "blocked"
        if self.status_code is not None:
            return f"http_{self.status_code // 100}xx"
        return self.error.split(":", 1)[0] if self.error else "error"

    def describe(self) -> str:
        if self.status_code is not None:
            return f"HTTP {self.status_code}"
        return self.error or "error"


class HostSlots:
    """A semaphore per host, created on demand and dropped once idle."""

    def __init__(self, per_host: int) -> None:
        self._per_host = per_host
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @asynccontextmanager
    async def take(self, host: str) -> AsyncIterator[None]:
        semaphore, users = self._slots.setdefault(host, (asyncio.Semaphore(self._per_host), [0]))
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._slots[host]


class Sender:
    def __init__(
        self, policy: AddressPolicy, signer: Signer, timeout_s: float, concurrency: int, per_host: int
    ) -> None:
        self._policy = policy
        self._signer = signer
        self._global = asyncio.Semaphore(concurrency)
        self._hosts = HostSlots(per_host)
        self._session = aiohttp.ClientSession(
            connector=vetted_connector(policy, concurrency, per_host),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,  # never through an environment proxy
        )

    async def close(self) -> None:
        await self._session.close()

    async def send(self, delivery: Delivery) -> Attempt:
        try:
            host, port = self._policy.check_url(delivery.url)
        except BlockedAddress as exc:
            attempt = Attempt(error=str(exc), blocked=True)
            self._log(delivery, urlsplit(delivery.url).hostname or "?", attempt, 0.0)
            return attempt
        async with self._hosts.take(f"{host}:{port}"), self._global:
            started = time.perf_counter()
            attempt = await self._post(delivery)
            latency = time.perf_counter() - started
        self._log(delivery, host, attempt, latency)
        return attempt

    async def _post(self, delivery: Delivery) -> Attempt:
        signature = self._signer.headers(delivery.owner, delivery.id, delivery.body)
        headers = {"content-type": "application/json", **signature}
        try:
            async with self._session.post(
                delivery.url, data=delivery.body.encode(), headers=headers, allow_redirects=False
            ) as response:
                await _drain(response)
                retry_after = _retry_after(response.headers.get("Retry-After"))
                return Attempt(status_code=response.status, retry_after_s=retry_after)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddress):
                return Attempt(error=str(exc.os_error), blocked=True)
            if isinstance(exc, aiohttp.ClientConnectorDNSError):  # retried: DNS is not an SSRF decision
                return Attempt(error=f"dns: {exc.os_error.strerror or exc.os_error}")
            return Attempt(error=f"connect: {exc.os_error.strerror or exc.os_error}")
        except TimeoutError:
            return Attempt(error="timeout: no answer in time")
        except aiohttp.ClientError as exc:
            return Attempt(error=f"http: {type(exc).__name__}")

    def _log(self, delivery: Delivery, host: str, attempt: Attempt, latency_s: float) -> None:
        metrics.ATTEMPTS.labels(attempt.outcome).inc()
        metrics.LATENCY.observe(latency_s)
        log.info(
            "webhook attempt",
            job_id=delivery.job_id,
            track_id=delivery.track_id,
            delivery_id=delivery.id,
            webhook_event=delivery.event,
            host=host,
            attempt=delivery.attempt + 1,
            status=attempt.status_code,
            error=attempt.error,
            latency_ms=round(latency_s * 1000, 1),
        )


async def _drain(response: aiohttp.ClientResponse) -> None:
    read = 0
    async for chunk in response.content.iter_chunked(16 * 1024):
        read += len(chunk)
        if read > MAX_RESPONSE_BYTES:
            response.close()  # a receiver that answers at length gets its connection closed
            return


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
