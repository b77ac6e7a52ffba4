"""The one way Easel builds its Kafka consumers, and commits what a group member finished.

Two kinds: a group member (the runners, the webhook dispatchers), which shares the work of its
group and commits by hand after the work is done; and a mirror consumer (see `TopicMirror`), which
belongs to no group and reads every partition of one topic.

Both read committed records only: a runner writes each job's outcome in a Kafka transaction, and an
aborted one (its runner crashed or was fenced before committing) must never be seen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.errors import KafkaError

from contract.settings import Settings
from producers.kafka_security import client_security

log = structlog.get_logger(__name__)
READ_COMMITTED = "read_committed"
SESSION_TIMEOUT_MS = 10_000  # a member that stops heartbeating loses its partitions after this
HEARTBEAT_INTERVAL_MS = 1_000
REBALANCE_MARGIN_MS = 60_000  # on top of the longest piece of work a member may hold a partition for

Partitions = set[TopicPartition]
OnPartitions = Callable[[Partitions], Awaitable[None]]


async def _nothing(partitions: Partitions) -> None:
    pass


@dataclass(frozen=True)
class Rebalance:
    """What a member does when partitions leave it and after new ones came (aiokafka awaits both)."""

    on_revoked: OnPartitions = _nothing
    on_assigned: OnPartitions = _nothing

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.on_assigned(set(assigned))


ConsumerRebalanceListener.register(Rebalance)  # aiokafka checks isinstance; its ABC ships no types to subclass


def group_consumer(
    settings: Settings,
    topics: list[str],
    *,
    group_id: str,
    client_id: str,
    instance_id: str,
    rebalance: Rebalance,
    work_timeout_s: float | None = None,
    max_poll_records: int | None = None,
    assignor: type[StickyPartitionAssignor] | None = None,
) -> AIOKafkaConsumer:
    """A member of `group_id`, subscribed to `topics`, not started. Offsets are committed with `commit`.

    A non-empty `instance_id` makes it a static member: restarted under the same id, it gets its
    partitions back at once instead of after a rebalance. `work_timeout_s` is the longest a member
    may spend between two polls (one job); a rebalance waits that long for it to give partitions up.
    `assignor` (a `sticky_assignor()`) keeps partitions with the member that had them when the group
    changes, so that a rebalance moves only what balance needs; round robin remains for members that lack it.
    """
    tuning: dict[str, int] = {}
    if work_timeout_s is not None:
        tuning["max_poll_interval_ms"] = tuning["rebalance_timeout_ms"] = (
            int(work_timeout_s * 1000) + REBALANCE_MARGIN_MS
        )
    if max_poll_records is not None:
        tuning["max_poll_records"] = max_poll_records
    assignors = (RoundRobinPartitionAssignor,) if assignor is None else (assignor, RoundRobinPartitionAssignor)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        group_id=group_id,
        client_id=client_id,
        group_instance_id=instance_id or None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        isolation_level=READ_COMMITTED,
        partition_assignment_strategy=assignors,
        **tuning,
        **client_security(settings),
    )
    consumer.subscribe(topics, listener=rebalance)
    return consumer


def note_generation(consumer: AIOKafkaConsumer, assignor: type[StickyPartitionAssignor]) -> None:
    """Tell the sticky assignor which group generation its assignment is from; call it in `on_assigned`.

    aiokafka never does (it does not call `on_generation_assignment`), so when two members claim one
    partition (one was out of the group for a while and comes back claiming what it had), the leader
    would settle it arbitrarily; with generations the newer claim wins, as KIP-54 intends.
    """
    assignor.on_generation_assignment(consumer._coordinator.generation)


def sticky_assignor() -> type[StickyPartitionAssignor]:
    """KIP-54 sticky assignment, for one consumer. aiokafka keeps the member's state on the class, so each
    consumer needs a class of its own; its `member_assignment` is what the member tells the group it holds
    when it rejoins, and the group's leader keeps those partitions with it where balance allows."""
    return type("StickyPartitionAssignor", (StickyPartitionAssignor,), {})


def mirror_consumer(settings: Settings, topic: str, client_id: str) -> AIOKafkaConsumer:
    """A consumer of every partition of `topic`, in no group, from the beginning unless told to seek."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        isolation_level=READ_COMMITTED,
        **client_security(settings),
    )


async def commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
    """Commit; False when Kafka refused (a rebalance, the coordinator away): the records will be read again."""
    try:
        await consumer.commit(offsets)
    except KafkaError as exc:
        log.warning(
            "offset commit failed; the records will be read again",
            partitions=sorted(tp.partition for tp in offsets), error=repr(exc)[:200],
        )
        return False
    return True
