"""`easel dev` (what `make run` starts): Kafka unless one is configured, the API, one runner and the
webhook dispatcher.

Each is its own process, as in production; Ctrl-C (or SIGTERM) stops them all, Kafka last.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

from contract.settings import Settings
from easel.lifecycle import raise_interrupt
from easel.local_kafka import LocalKafka
from easel.webhooks import dev_secret


def dev_key(settings: Settings) -> str:
    """EASEL_DEV_KEY, or a key generated once and kept under EASEL_HOME."""
    if settings.dev_key:
        return settings.dev_key
    path = settings.home / "dev-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def run_dev(settings: Settings) -> int:
    broker = None
    if not settings.kafka_bootstrap:
        broker = LocalKafka(settings.home)
        print("starting Kafka ...", flush=True)
        broker.start()
    key = dev_key(settings)
    env = {**os.environ, "EASEL_DEV_KEY": key, "EASEL_KAFKA_BOOTSTRAP": settings.bootstrap}
    env.setdefault("EASEL_RUNNER_ID", "dev-runner-0")
    env["EASEL_WEBHOOK_SECRET"] = dev_secret(settings)
    env.setdefault("EASEL_WEBHOOK_DISPATCHER_ID", "dev-webhooks-0")
    # Own sessions: Ctrl-C reaches only this process, which then stops the others itself, in order.
    processes = [
        subprocess.Popen([sys.executable, "-m", "easel.cli", command], env=env, start_new_session=True)
        for command in ("api", "runner", "webhooks")
    ]
    print(f"\n  Easel API   {settings.base_url}\n  API key     {key}\n  Kafka       {settings.bootstrap}\n", flush=True)
    print(f"  Webhooks    signed with the secret in {settings.home / 'webhook-secret'} (or EASEL_WEBHOOK_SECRET)\n", flush=True)
    print("  Ctrl-C stops everything.\n", flush=True)
    signal.signal(signal.SIGTERM, raise_interrupt)  # `kill` stops everything as Ctrl-C does
    code = 0
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        code = 1  # one of them died: stop the rest and say so
        print("a process exited; stopping", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping ...", file=sys.stderr, flush=True)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if broker is not None:
            broker.stop()
    return code
