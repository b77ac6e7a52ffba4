"""Third-party log lines a user cannot act on do not flood the log."""

from __future__ import annotations

import logging

import pytest

from contract.log import configure_logging


def test_a_missing_topic_is_reported_once_per_topic(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging()
    configure_logging()  # twice, as a process may: still once per message
    cluster = logging.getLogger("aiokafka.cluster")
    with caplog.at_level(logging.ERROR, logger="aiokafka.cluster"):
        for _ in range(50):  # aiokafka logs this on every metadata refresh
            cluster.error("Topic %s not found in cluster metadata", "noise-test.webhooks.status")
        cluster.error("Topic %s not found in cluster metadata", "noise-test.other")
    messages = [r.getMessage() for r in caplog.records if r.name == "aiokafka.cluster"]
    assert messages == [
        "Topic noise-test.webhooks.status not found in cluster metadata",
        "Topic noise-test.other not found in cluster metadata",
    ]
