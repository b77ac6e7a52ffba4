"""Kafka security as compose deploys it, proven on a real broker: compose's broker settings
(kafka/broker.properties: SASL/SCRAM, the StandardAuthorizer, nothing allowed without an ACL), the users
compose creates, and the ACLs compose applies (kafka/acls.sh, run here with the broker's own ACL tool).
Clients are Easel's own, built by its factories from `Settings`, so they authenticate as a deployment's would.
"""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from aiokafka.errors import KafkaConnectionError, TransactionalIdAuthorizationFailed

from consumers.kafka import Rebalance, group_consumer
from contract.errors import RecordRejected, SettingsError
from contract.settings import Settings
from contract.topics import Topics
from easel.local_kafka import ADMIN, LocalKafka, Scram
from producers import ensure_topics, open_producer, publish
from producers.kafka_security import client_security
from tests.conftest import HOME
from tests.processes import REPO, own_broker

USERS = (ADMIN, "api", "runner", "webhooks", "producer")
TOPICS = Topics()  # the default prefix, the one compose uses
# The broker's ACL tool from the Maven jars, started for speed (each ACL call is a short JVM).
ACL_TOOL = (
    "java -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "
    f"-Dlog4j.configuration=file:{REPO / 'kafka' / 'log4j.properties'} -cp {HOME.resolve() / 'kafka' / 'libs'}/* "
    "kafka.admin.AclCommand"
)


@pytest.fixture(scope="module")
def scram() -> Scram:
    return Scram({user: secrets.token_hex(16) for user in USERS})


@pytest.fixture(scope="module")
def broker(scram: Scram) -> Iterator[LocalKafka]:
    with own_broker(scram) as broker:
        applied = subprocess.run(
            ["sh", str(REPO / "kafka" / "acls.sh")],
            env={**os.environ, "ADMIN_PASSWORD": scram.users[ADMIN], "BOOTSTRAP": broker.bootstrap,
                 "KAFKA_ACLS": ACL_TOOL},
            capture_output=True, text=True, timeout=300,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield broker


@pytest.fixture(scope="module")
async def topics(broker: LocalKafka, scram: Scram) -> Topics:
    await ensure_topics(as_user(scram, broker, ADMIN))  # as compose's `topics` service does
    return TOPICS


def as_user(scram: Scram, broker: LocalKafka, user: str) -> Settings:
    return scram.settings(user, broker.bootstrap)


async def write(settings: Settings, topic: str) -> None:
    producer = await open_producer(settings, f"test-{settings.kafka_username}")
    try:
        await publish(producer, topic, b"{}", uuid.uuid4().hex.encode(), what="a test record", within_s=20)
    finally:
        await producer.stop()


@pytest.mark.parametrize("user", ["api", "producer"])
async def test_the_api_and_a_trusted_producer_may_submit_jobs(
    broker: LocalKafka, scram: Scram, topics: Topics, user: str
) -> None:
    await write(as_user(scram, broker, user), topics.requests)


@pytest.mark.parametrize("user", ["runner", "webhooks"])
async def test_no_other_process_may_submit_jobs(broker: LocalKafka, scram: Scram, topics: Topics, user: str) -> None:
    with pytest.raises(RecordRejected, match="TopicAuthorizationFailed"):
        await write(as_user(scram, broker, user), topics.requests)


async def test_runners_write_statuses_and_the_dispatcher_may_not(
    broker: LocalKafka, scram: Scram, topics: Topics
) -> None:
    await write(as_user(scram, broker, "runner"), topics.state)
    with pytest.raises(RecordRejected, match="TopicAuthorizationFailed"):
        await write(as_user(scram, broker, "webhooks"), topics.state)


async def test_runners_read_jobs_in_their_group(broker: LocalKafka, scram: Scram, topics: Topics) -> None:
    await write(as_user(scram, broker, "api"), topics.requests)
    consumer = group_consumer(
        as_user(scram, broker, "runner"), [topics.requests], group_id=topics.runner_group,
        client_id="test-runner", instance_id="", rebalance=Rebalance(),
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=30_000)
        assert any(batches.values())
    finally:
        await consumer.stop()


async def test_only_runners_hold_runner_transactions(broker: LocalKafka, scram: Scram, topics: Topics) -> None:
    transactional_id = f"{topics.prefix}.runner.p0"
    runner = await open_producer(as_user(scram, broker, "runner"), "test-runner", transactional_id=transactional_id)
    await runner.stop()
    with pytest.raises(TransactionalIdAuthorizationFailed):
        await open_producer(as_user(scram, broker, "webhooks"), "test-webhooks", transactional_id=transactional_id)


async def test_a_wrong_password_cannot_connect(broker: LocalKafka, scram: Scram) -> None:
    wrong = as_user(scram, broker, "api").replace(kafka_password="not-" + scram.users["api"])
    with pytest.raises(KafkaConnectionError):
        await open_producer(wrong, "test-intruder")


def test_plaintext_needs_no_arguments() -> None:
    assert client_security(Settings()) == {}


def test_sasl_needs_a_user_and_a_password() -> None:
    with pytest.raises(SettingsError, match="EASEL_KAFKA_PASSWORD"):
        client_security(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_username="api"))


@pytest.mark.parametrize(
    ("field", "value"), [("kafka_security_protocol", "SSL-ish"), ("kafka_sasl_mechanism", "GSSAPI")]
)
def test_unsupported_choices_are_refused(field: str, value: str) -> None:
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_username="api", kafka_password="pw")
    with pytest.raises(SettingsError, match=value):
        client_security(settings.replace(**{field: value}))


def test_sasl_ssl_verifies_the_broker_and_a_missing_ca_file_is_named() -> None:
    settings = Settings(kafka_security_protocol="sasl_ssl", kafka_username="api", kafka_password="pw")
    security = client_security(settings)
    assert security["security_protocol"] == "SASL_SSL" and security["sasl_mechanism"] == "SCRAM-SHA-512"
    assert security["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(SettingsError, match="EASEL_KAFKA_CA_FILE"):
        client_security(settings.replace(kafka_ca_file="/no/such/ca.pem"))


def test_the_password_is_never_shown() -> None:
    settings = Settings.from_env({"EASEL_KAFKA_USERNAME": "api", "EASEL_KAFKA_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(settings) and "kafka_username='api'" in repr(settings)
