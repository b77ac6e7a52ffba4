"""`easel dev` (what `make run` starts): Kafka unless one is configured, then the API, one runner (one per model
with EASEL_MODELS) and the webhook dispatcher under a supervisor.

Each is its own process, as in production. One that exits is restarted with a backoff (easel/supervisor.py);
only Ctrl-C (or SIGTERM) stops the stack: the processes in the order of PROCESSES, Kafka last.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from contract.catalog import DEFAULT_MODEL, Catalog, served_models
from contract.errors import SettingsError
from contract.loras import LoraFolder
from contract.settings import Settings
from easel.lifecycle import StopRequest, raise_interrupt
from easel.local_kafka import LocalKafka
from easel.supervisor import Child, Supervisor

# The `easel` subcommands `easel dev` runs, in start and stop order: the API stops first, so no job arrives
# while the runner and the dispatcher finish theirs. compose.yaml has a service for each (tests/test_compose.py).
PROCESSES = ("api", "runner", "webhooks")
# The names the demo serves its tiny models by: SDXL's, so the seeds' examples (A1111 `sd_model_checkpoint`,
# `refiner_checkpoint`) run unchanged against a fresh `make run`.
DEMO_MODEL_NAME = "sd_xl_base_1.0"
DEMO_REFINER_NAME = "sd_xl_refiner_1.0"
# The demo's LoRA (`<lora:tiny:0.8>`), for the tiny model only.
DEMO_LORA_NAME = "tiny"


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


def demo_env(settings: Settings) -> dict[str, str]:
    """What a fresh `make run` configures beyond `settings`: with the tiny model (EASEL_MODEL unset), SDXL's names
    for it and a tiny refiner built beside it. What the operator set is kept; a real model gets nothing.

    The one definition of the demo stack: `easel dev` gives it to its children, and the tests build theirs with it.
    With EASEL_MODELS the operator named every model: nothing is added.
    """
    if settings.model or settings.models:
        return {}
    env: dict[str, str] = {}
    if settings.model_name == DEFAULT_MODEL:
        env["EASEL_MODEL_NAME"] = DEMO_MODEL_NAME
    if not settings.refiner:
        env["EASEL_REFINER"] = str(tiny_refiner(settings.home))
        if settings.refiner_name == Settings.refiner_name:
            env["EASEL_REFINER_NAME"] = DEMO_REFINER_NAME
    if not settings.lora_dir:
        tiny_lora(LoraFolder.from_settings(settings))
    return env


def tiny_refiner(home: Path) -> Path:
    """The tiny refiner beside the tiny base under EASEL_HOME, built offline the first time.

    Built by `easel model tiny-refiner` in a child process, so this supervisor never imports torch.
    """
    path = home / "models" / "tiny-sdxl-refiner"
    if not (path / "model_index.json").is_file():  # diffusers' saved-pipeline marker, written last (renamed in)
        print("building the tiny SDXL refiner ...", flush=True)
        subprocess.run([sys.executable, "-m", "easel.cli", "model", "tiny-refiner", str(path)], check=True)
    return path


def tiny_lora(folder: LoraFolder) -> Path:
    """A tiny LoRA for the tiny model, `DEMO_LORA_NAME` in the default LoRA folder, built offline the first time
    (by `easel model tiny-lora`, in a child process as the refiner is)."""
    path = folder.file_of(DEMO_LORA_NAME)
    if not path.is_file():
        print("building the tiny LoRA ...", flush=True)
        command = ["model", "tiny-lora", str(folder.path), "--name", DEMO_LORA_NAME]
        subprocess.run([sys.executable, "-m", "easel.cli", *command], check=True)
    return path


def run_dev(settings: Settings) -> int:
    try:
        Catalog.from_settings(settings)  # a bad EASEL_MODELS is refused before anything starts
    except SettingsError as exc:
        print(f"easel dev: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, raise_interrupt)  # while Kafka starts, `kill` stops it as Ctrl-C does
    broker = None
    try:
        if not settings.kafka_bootstrap:
            broker = LocalKafka(settings.home)
            print("starting Kafka ...", flush=True)
            broker.start()
        key = dev_key(settings)
        env = child_env(settings, key)
        served = Catalog.from_settings(Settings.from_env(env))
        supervisor = Supervisor(dev_children(settings, env))
        stop = StopRequest()
        stop.listen()
        print(
            f"\n  Easel API   {settings.base_url}\n  API key     {key}\n  Kafka       {settings.bootstrap}\n"
            f"  Models      {', '.join(served.models)}; refiner {', '.join(served.refiners) or 'none'}\n"
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


def dev_children(settings: Settings, env: dict[str, str]) -> list[Child]:
    """The processes of PROCESSES, in order; with EASEL_MODELS, a runner per model (EASEL_MODEL_NAME picks its
    model), each with its own id."""
    children = []
    for command in PROCESSES:
        argv = [sys.executable, "-m", "easel.cli", command]
        if command != "runner" or not settings.models:
            children.append(Child(command, argv, env))
            continue
        for model in served_models(settings):
            runner_id = f"{env['EASEL_RUNNER_ID']}-{model.name}"
            runner_env = {**env, "EASEL_MODEL_NAME": model.name, "EASEL_RUNNER_ID": runner_id}
            children.append(Child(f"runner-{model.name}", argv, runner_env))
    return children


def child_env(settings: Settings, key: str) -> dict[str, str]:
    env = {**os.environ, **demo_env(settings), "EASEL_DEV_KEY": key, "EASEL_KAFKA_BOOTSTRAP": settings.bootstrap}
    env["EASEL_WEBHOOK_SECRET"] = dev_webhook_secret(settings)
    # Fixed ids double as static group members: a restarted runner or dispatcher takes its partitions back at once.
    env.setdefault("EASEL_RUNNER_ID", "dev-runner-0")
    env.setdefault("EASEL_WEBHOOK_DISPATCHER_ID", "dev-webhooks-0")
    return env
