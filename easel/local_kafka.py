"""A local Apache Kafka on loopback (KRaft, every node broker + controller), from Maven jars: one node or a cluster.

`make` copies the jars into `<home>/kafka/libs` (see kafka/pom.xml). This module writes the
configuration, formats the storage once, starts the JVM, waits until the broker answers, and
stops it with SIGTERM (a controlled shutdown). A broker that dies while starting fails fast with
the tail of its log.

`make run` and the tests use a PLAINTEXT broker on loopback. With `scram`, the broker takes compose's security
instead (kafka/broker.properties: SASL/SCRAM, the StandardAuthorizer, admin as the super user), so the tests
can prove the ACLs compose applies (kafka/acls.sh). `LocalKafkaCluster` runs several PLAINTEXT nodes as one
cluster, topics replicated on three of them, so the tests can stop a broker under load.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError

from contract.settings import Settings
from contract.topics import min_insync_replicas
from easel.lifecycle import stop_process
from producers.kafka_security import client_security

REPO = Path(__file__).resolve().parent.parent
LOG4J = REPO / "kafka" / "log4j.properties"
COMPOSE_BROKER = REPO / "kafka" / "broker.properties"
START_TIMEOUT_S = 120.0
ADMIN = "admin"  # compose's super user; the broker authenticates to itself as admin
SCRAM_MECHANISM = "SCRAM-SHA-512"

PLAINTEXT_LISTENERS = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
"""
# After kafka/broker.properties (a later line wins): its listeners on loopback, and the secrets compose passes in.
SCRAM_LISTENERS = """\
controller.quorum.voters={voters}
listeners=INTERNAL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=INTERNAL://127.0.0.1:{port}
listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \
required username="admin" password="{admin_password}";
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
required username="admin" password="{admin_password}" user_admin="{admin_password}";
"""
LOCAL_TUNING = """\
log.dirs={data_dir}
num.partitions=1
default.replication.factor={replicas}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
auto.create.topics.enable=false
num.recovery.threads.per.data.dir=1
"""
# A cluster's controllers fence a broker that stopped answering after 4 s rather than 9, moving its leaders away:
# what a client of a cluster with one broker killed waits for.
CLUSTER_TUNING = """\
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
"""
CLUSTER_REPLICAS = 3  # internal topics' replicas in a cluster of three nodes or more


class BrokerError(RuntimeError):
    """The local broker could not be started."""


@dataclass(frozen=True)
class Scram:
    """SCRAM users (name -> password, admin among them) created when the storage is formatted."""

    users: Mapping[str, str]

    def settings(self, user: str, bootstrap: str) -> Settings:
        """The settings of a client that connects as `user`."""
        return Settings(
            kafka_bootstrap=bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism=SCRAM_MECHANISM,
            kafka_username=user,
            kafka_password=self.users[user],
        )


@dataclass(frozen=True)
class Quorum:
    """The nodes of a cluster (node id -> controller port, every node a voter) and the id they are formatted with."""

    cluster_id: str
    controller_ports: Mapping[int, int]

    @property
    def voters(self) -> str:
        return ",".join(f"{node}@127.0.0.1:{port}" for node, port in self.controller_ports.items())

    @property
    def replicas(self) -> int:
        return min(CLUSTER_REPLICAS, len(self.controller_ports))


class LocalKafka:
    """One node: on its own, or node `node_id` of a `quorum` (see LocalKafkaCluster)."""

    def __init__(
        self,
        home: Path,
        port: int = 19092,
        controller_port: int = 19093,
        *,
        scram: Scram | None = None,
        node_id: int = 1,
        quorum: Quorum | None = None,
    ) -> None:
        self.root = home.resolve() / "kafka"
        self.libs = self.root / "libs"
        self.data_dir = self.root / f"data-{port}"
        self.log_file = self.root / f"broker-{port}.log"
        self.port = port
        self.controller_port = controller_port
        self.scram = scram
        self.node_id = node_id
        self.quorum = quorum
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the node and wait until it answers (in a cluster: until it sees every broker)."""
        self.launch()
        self.wait_until_ready()

    def launch(self) -> None:
        """Format the storage once and start the JVM, without waiting: a cluster's nodes answer only together."""
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise BrokerError(f"no Kafka jars in {self.libs}: run `make install` first")
        properties = self.root / f"server-{self.port}.properties"
        properties.write_text(self._properties())
        self._java(
            "kafka.tools.StorageTool", "format", "-t", self._cluster_id(), "-c", str(properties), "--ignore-formatted",
            *self._scram_users(),
        )
        with self.log_file.open("wb") as log:  # the JVM keeps its own copy of the file
            self.process = subprocess.Popen(
                self._command("kafka.Kafka", str(properties), heap="-Xmx512m"),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop the broker cleanly
            )

    def wait_until_ready(self) -> None:
        asyncio.run(self._wait_until_ready())

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout_s)

    def kill(self) -> None:
        """SIGKILL: no controlled shutdown, exactly what a crashed broker looks like."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def _brokers(self) -> int:
        """How many brokers the node must see to be ready."""
        return len(self.quorum.controller_ports) if self.quorum else 1

    @property
    def _voters(self) -> str:
        return self.quorum.voters if self.quorum else f"{self.node_id}@127.0.0.1:{self.controller_port}"

    def _properties(self) -> str:
        replicas = self.quorum.replicas if self.quorum else 1
        tuning = LOCAL_TUNING.format(data_dir=self.data_dir, replicas=replicas, min_isr=min_insync_replicas(replicas))
        if self.quorum is not None:
            tuning += CLUSTER_TUNING
        if self.scram is None:
            return PLAINTEXT_LISTENERS.format(
                node_id=self.node_id, voters=self._voters, port=self.port, controller_port=self.controller_port
            ) + tuning
        listeners = SCRAM_LISTENERS.format(
            voters=self._voters, port=self.port, controller_port=self.controller_port,
            admin_password=self.scram.users[ADMIN],
        )
        return f"{COMPOSE_BROKER.read_text()}\n{tuning}{listeners}"

    def _scram_users(self) -> list[str]:
        users = self.scram.users if self.scram is not None else {}
        return [
            arg for name, password in users.items()
            for arg in ("--add-scram", f'{SCRAM_MECHANISM}=[name={name},password="{password}"]')
        ]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    async def _wait_until_ready(self) -> None:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refused connections are expected here
        try:
            await self._poll_until_ready()
        finally:
            logging.getLogger("aiokafka").setLevel(logging.NOTSET)

    async def _poll_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise BrokerError(f"Kafka exited with code {self.process.returncode}:\n{self.log_tail()}")
            security = client_security(self.scram.settings(ADMIN, self.bootstrap)) if self.scram else {}
            client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000, **security)
            try:
                await client.bootstrap()
                if len(client.cluster.brokers()) >= self._brokers:
                    return
            except KafkaConnectionError:
                pass
            finally:
                await client.close()
            await asyncio.sleep(0.3)
        self.stop()
        raise BrokerError(f"Kafka did not answer within {START_TIMEOUT_S:g} s:\n{self.log_tail()}")

    def _cluster_id(self) -> str:
        if self.quorum is not None:
            return self.quorum.cluster_id
        return _kept_cluster_id(self.root / f"cluster-id-{self.port}", self.data_dir)

    def _java(self, main: str, *args: str) -> None:
        result = subprocess.run(self._command(main, *args, heap="-Xmx256m"), capture_output=True, text=True)
        if result.returncode != 0:
            raise BrokerError(f"{main} {args[0]} failed:\n{result.stdout}\n{result.stderr}")

    def _command(self, main: str, *args: str, heap: str) -> list[str]:
        return [
            os.environ.get("JAVA", "java"),
            heap,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{LOG4J}",
            f"-Dkafka.logs.dir={self.root / 'logs'}",
            "-cp",
            f"{self.libs}/*",  # expanded by the JVM, not the shell
            main,
            *args,
        ]


class LocalKafkaCluster:
    """One KRaft cluster of a node per (broker port, controller port), node ids from 1, every node a voter.

    With three nodes the internal topics (group offsets, transactions) have three replicas and need two in sync,
    so the cluster keeps working, and loses no acknowledged write, with any one node stopped.
    """

    def __init__(self, home: Path, ports: Sequence[tuple[int, int]]) -> None:
        root = home.resolve() / "kafka"
        first_port = ports[0][0]
        cluster_id = _kept_cluster_id(root / f"cluster-id-{first_port}", root / f"data-{first_port}")
        quorum = Quorum(cluster_id, {node: controller for node, (_, controller) in enumerate(ports, start=1)})
        self.nodes = [
            LocalKafka(home, port, controller, node_id=node, quorum=quorum)
            for node, (port, controller) in enumerate(ports, start=1)
        ]

    @property
    def bootstrap(self) -> str:
        """Every node's address: a client finds the cluster through any one that is up."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        return self.nodes[node_id - 1]

    def start(self) -> None:
        """Start every node, then wait until each sees them all."""
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to every node at once (one by one, the last ones would wait for a quorum that is gone)."""
        running = [node.process for node in self.nodes if node.process is not None and node.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout_s
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _kept_cluster_id(path: Path, data_dir: Path) -> str:
    """Made once per data folder (kept in `path`): formatting again with another id is refused."""
    if not path.exists() or not (data_dir / "meta.properties").exists():
        path.write_text(_new_cluster_id())
    return path.read_text().strip()


def _new_cluster_id() -> str:
    """Kafka's Uuid string form: 22 characters of URL-safe base64 without padding.

    Like Kafka's own generator, never one starting with '-', which the tool would read as an option.
    """
    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"):
        pass
    return cluster_id
