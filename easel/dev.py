"""`easel dev` (what `make run` starts): Kafka unless one is configured, then the API, one runner and the
webhook dispatcher under a supervisor.

Each is its own process, as in production. One that exits is restarted with a backoff (easel/supervisor.py);
only Ctrl-C (or SIGTERM) stops the stack: the processes in the order of PROCESSES, Kafka last.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from contract.settings import Settings
from easel.lifecycle import StopRequest, raise_interrupt
from easel.local_kafka import LocalKafka
from easel.supervisor import Child, Supervisor

# The `easel` subcommands `easel dev` runs, in start and stop order: the API stops first, so no job arrives
# while the runner and the dispatcher finish theirs. compose.yaml has a service for each (tests/test_compose.py).
PROCESSES = ("api", "runner", "webhooks")


def dev_key(settings: Settings) -> str:
    """EASEL_DEV_KEY, or a key generated once and kept under EASEL_HOME."""
    return settings.dev_key or _kept_secret(settings.home / "dev-key", lambda: secrets.token_urlsafe(24))


def dev_webhook_secret(settings: Settings) -> str:
    """EASEL_WEBHOOK_SECRET, or a Standard Webhooks whsec_ secret generated once and kept under EASEL_HOME."""
    return settings.webhook_secret or _kept_secret(
        settings.home / "webhook-secret", lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    )


def _kept_secret(path: Path, generate: Callable[[], str]) -> str:
    """The secret in `path`, written (readable by its owner only) by `generate` the first time."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate())
        path.chmod(0o600)
    return path.read_text().strip()


def run_dev(settings: Settings) -> int:
    signal.signal(signal.SIGTERM, raise_interrupt)  # while Kafka starts, `kill` stops it as Ctrl-C does
    broker = None
    try:
        if not settings.kafka_bootstrap:
            broker = LocalKafka(settings.home)
            print("starting Kafka ...", flush=True)
            broker.start()
        key = dev_key(settings)
        env = child_env(settings, key)
        supervisor = Supervisor([Child(name, [sys.executable, "-m", "easel.cli", name], env) for name in PROCESSES])
        stop = StopRequest()
        stop.listen()
        print(
            f"\n  Easel API   {settings.base_url}\n  API key     {key}\n  Kafka       {settings.bootstrap}\n"
            f"  Webhooks    signed with the secret in {settings.home / 'webhook-secret'} (or EASEL_WEBHOOK_SECRET)\n\n"
            "  A process that exits is restarted; Ctrl-C stops everything.\n",
            flush=True,
        )
        supervisor.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        if broker is not None:
            broker.stop()
    return 0


def child_env(settings: Settings, key: str) -> dict[str, str]:
    env = {**os.environ, "EASEL_DEV_KEY": key, "EASEL_KAFKA_BOOTSTRAP": settings.bootstrap}
    env["EASEL_WEBHOOK_SECRET"] = dev_webhook_secret(settings)
    # Fixed ids double as static group members: a restarted runner or dispatcher takes its partitions back at once.
    env.setdefault("EASEL_RUNNER_ID", "dev-runner-0")
    env.setdefault("EASEL_WEBHOOK_DISPATCHER_ID", "dev-webhooks-0")
    return env
