"""A three-node Kafka cluster of the tests' own, on free ports, its data removed after."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from easel.local_kafka import LocalKafkaCluster
from tests.processes import HOME, free_port

NODES = 3


@contextmanager
def own_cluster(nodes: int = NODES) -> Iterator[LocalKafkaCluster]:
    cluster = LocalKafkaCluster(HOME, [(free_port(), free_port()) for _ in range(nodes)])
    for node in cluster.nodes:
        shutil.rmtree(node.data_dir, ignore_errors=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        for node in cluster.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)
