"""Topic names and their configuration. Names carry a prefix so several stacks can share a cluster."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

# The header the API puts on each request it writes: HMAC-SHA256 of the record's value under the job
# signing secret. Runners tell API jobs (owner checked by the API) from jobs written straight to Kafka by it.
SIGNATURE_HEADER = "easel-signature"


def request_signature(secret: str, value: bytes) -> bytes:
    return hmac.new(secret.encode(), value, hashlib.sha256).hexdigest().encode()


def signed_by_api(secret: str, value: bytes, headers: dict[str, bytes]) -> bool:
    """Whether a request carries the API's signature; never with an empty secret."""
    signature = headers.get(SIGNATURE_HEADER)
    return bool(secret) and signature is not None and hmac.compare_digest(signature, request_signature(secret, value))


def min_insync_replicas(replication_factor: int) -> int:
    """How many replicas must have a record before Kafka acknowledges it (producers use acks=all).

    Two once there are three replicas or more: a write survives losing any one broker, and one broker may be
    down without stopping writes. Below three it stays 1, or a single stopped broker would refuse every write.
    """
    return 2 if replication_factor >= 3 else 1


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str]


RUNNER_CLIENT_PREFIX = "easel-runner-"
# What a Kafka topic name may hold, and how long it may be.
TOPIC_NAME_PATTERN = r"[A-Za-z0-9._-]+"
MAX_TOPIC_NAME = 249


@dataclass(frozen=True)
class Topics:
    prefix: str = "easel"

    @property
    def requests(self) -> str:
        """Job requests, keyed by job id. Partitions bound how many runners work at once."""
        return f"{self.prefix}.jobs.requests"

    def requests_for(self, model: str | None) -> str:
        """The request topic of one model (contract/catalog.py routes names): None, the first model, keeps
        `requests`, so single-model deployments and Kafka producers writing there are unchanged; every other
        model has its own, so a slow model's backlog never holds back another's jobs."""
        return self.requests if model is None else f"{self.requests}.{model}"

    @property
    def events(self) -> str:
        """Every event of every job (queued, started, progress, ..., completed), keyed by job id."""
        return f"{self.prefix}.jobs.events"

    @property
    def state(self) -> str:
        """Compacted: the latest `JobStatus` per job id. Views rebuild themselves from it."""
        return f"{self.prefix}.jobs.state"

    @property
    def control(self) -> str:
        """Commands to runners, such as cancel, keyed by job id."""
        return f"{self.prefix}.jobs.control"

    @property
    def dead_letters(self) -> str:
        """Messages that could not be parsed or validated, with the reason in a header."""
        return f"{self.prefix}.jobs.dead-letters"

    @staticmethod
    def runner_client_id(runner_id: str) -> str:
        """A runner's Kafka client id: the group's member list names the runners by it (RunPod /health)."""
        return RUNNER_CLIENT_PREFIX + runner_id

    @property
    def runner_group(self) -> str:
        """The consumer group of the runners. Per prefix: stacks sharing a cluster never share work."""
        return f"{self.prefix}.runners"

    def runner_group_for(self, model: str | None) -> str:
        """The consumer group of one model's runners (None: the first model's, `runner_group`). A group per model:
        a runner of one model joining or leaving never makes the others' groups rebalance."""
        return self.runner_group if model is None else f"{self.runner_group}.{model}"

    def runner_transactions_for(self, model: str | None) -> str:
        """The namespace of one model's transactional ids (gpu_runner/outcomes.py names them `<namespace>.runner.p<n>`,
        one per partition number): per model, so runners of two models holding the same partition number never
        fence each other. The first model keeps the plain prefix; every id still starts with `<prefix>.runner.`
        (what the runners' ACL grants, kafka/acls.sh)."""
        return self.prefix if model is None else f"{self.prefix}.runner.{model}"

    @property
    def webhook_group(self) -> str:
        """The consumer group of the webhook dispatchers."""
        return f"{self.prefix}.webhooks"

    def specs(self, request_partitions: int, routed_models: tuple[str, ...] = ()) -> list[TopicSpec]:
        """The job topics; `routed_models`: the models with a request topic of their own (all but the first)."""
        week = str(7 * 24 * 3600 * 1000)
        return [
            TopicSpec(self.requests, request_partitions, {"retention.ms": week}),
            *(TopicSpec(self.requests_for(m), request_partitions, {"retention.ms": week}) for m in routed_models),
            TopicSpec(self.events, 1, {"retention.ms": week}),
            TopicSpec(
                self.state,
                1,
                {
                    "cleanup.policy": "compact",
                    # Small segments so the cleaner can compact before the default 7 days.
                    "segment.ms": str(3600 * 1000),
                    "min.cleanable.dirty.ratio": "0.1",
                    # How long a tombstone (a job purged after retention) outlives compaction, so that a view
                    # replaying the topic meanwhile still sees the delete; after it, the key is gone for good.
                    "delete.retention.ms": str(3600 * 1000),
                },
            ),
            TopicSpec(self.control, 1, {"retention.ms": str(24 * 3600 * 1000)}),
            TopicSpec(self.dead_letters, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        ]

    # Webhook dispatcher. Deliveries are keyed by job id; statuses by delivery id; endpoints by URL.
    @property
    def webhook_deliveries(self) -> str:
        """Deliveries due now (a first attempt, or a replay)."""
        return f"{self.prefix}.webhooks.deliveries"

    def webhook_retries(self, delay_ms: int) -> str:
        """Deliveries waiting `delay_ms` for their next attempt: one topic per delay, so each is in due order."""
        return f"{self.prefix}.webhooks.retry-{delay_ms}ms"

    @property
    def webhook_status(self) -> str:
        """Compacted: the latest `DeliveryStatus` per delivery id (pending / delivered / failed)."""
        return f"{self.prefix}.webhooks.status"

    @property
    def webhook_endpoints(self) -> str:
        """Compacted: URLs that answered 410 Gone and get no more deliveries; a tombstone re-enables one."""
        return f"{self.prefix}.webhooks.endpoints"

    @property
    def webhook_dead_letters(self) -> str:
        """Deliveries that used up every attempt (or hit 410), kept for `easel webhooks replay`."""
        return f"{self.prefix}.webhooks.dead-letters"

    def webhook_specs(self, partitions: int, retry_delays_ms: list[int]) -> list[TopicSpec]:
        week = str(7 * 24 * 3600 * 1000)
        compacted = {"cleanup.policy": "compact", "segment.ms": str(3600 * 1000), "min.cleanable.dirty.ratio": "0.1"}
        return [
            TopicSpec(self.webhook_deliveries, partitions, {"retention.ms": week}),
            *(TopicSpec(self.webhook_retries(d), partitions, {"retention.ms": week}) for d in retry_delays_ms),
            TopicSpec(self.webhook_status, 1, compacted),
            TopicSpec(self.webhook_endpoints, 1, compacted),
            TopicSpec(self.webhook_dead_letters, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        ]
