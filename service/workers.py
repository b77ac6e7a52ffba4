"""How many runners there are, and how many of them run a job: RunPod's `/health` `workers`.

A runner is a member of its model's runner group (`Topics.runner_group_for`), so the groups' descriptions list the
live runners of every model; the state view says which runners run a job. The answer is kept for `CACHE_S`, so
/health cannot hammer the broker; while the broker cannot be asked, it is what the view knows (the runners with a
running job, none idle).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from consumers.state_view import StateView
from contract.catalog import Catalog
from contract.settings import Settings
from contract.topics import RUNNER_CLIENT_PREFIX, Topics
from producers.kafka_security import client_security

log = structlog.get_logger(__name__)
CACHE_S = 2.0
ASK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Workers:
    idle: int
    running: int


class WorkerCensus:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._groups = Catalog.from_settings(settings).runner_groups(Topics(settings.topic_prefix))
        self._lock = asyncio.Lock()
        self._members: list[str] | None = None  # the runner ids of the group's members, as last asked
        self._asked_at = float("-inf")

    async def count(self, view: StateView) -> Workers:
        """Idle and running runners: the group's members (asked at most every CACHE_S), split by the view."""
        busy = {status.runner_id for status in view.running() if status.runner_id}
        members = await self._runner_ids()
        if members is None:  # the broker could not be asked: the runners the view sees working
            return Workers(idle=0, running=len(busy))
        running = sum(1 for runner_id in members if runner_id in busy)
        return Workers(idle=len(members) - running, running=running)

    async def _runner_ids(self) -> list[str] | None:
        async with self._lock:  # concurrent callers share one question to the broker
            if time.monotonic() - self._asked_at >= CACHE_S:
                self._members = await self._ask()
                self._asked_at = time.monotonic()
            return self._members

    async def _ask(self) -> list[str] | None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._settings.bootstrap, client_id="easel-api-census",
            **client_security(self._settings),
        )
        try:
            async with asyncio.timeout(ASK_TIMEOUT_S):  # closing included: /health waits for none of it longer
                try:
                    await admin.start()
                    # One group per request: aiokafka fails to decode the answer for several at once.
                    answers = await asyncio.gather(*(admin.describe_consumer_groups([g]) for g in self._groups))
                finally:
                    await admin.close()
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("could not describe the runners' groups; counting from the state view", error=repr(exc))
            return None
        # DescribeGroupsResponse: groups of (error_code, group_id, state, protocol_type, protocol, members, ...),
        # members of (member_id, client_id, ...).
        return [
            member[1].removeprefix(RUNNER_CLIENT_PREFIX)
            for responses in answers
            for response in responses
            for group in response.groups
            for member in group[5]
        ]
