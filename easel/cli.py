"""`easel <command>`: the long-running processes and the tools. See `easel --help`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from contract.log import configure_logging
from contract.settings import Settings
from easel.lifecycle import raise_interrupt, run_until_stopped, settle_gc

if TYPE_CHECKING:
    from starlette.applications import Starlette


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="easel", description="Event-driven SDXL text-to-image service.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "dev", help="start Kafka (unless configured), the API, a runner and the webhook dispatcher, restarting any "
        "that exits; Ctrl-C stops all",
    )
    commands.add_parser("kafka", help="run the local Kafka broker in the foreground")
    api = commands.add_parser("api", help="run the HTTP API")
    api.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="serve from N processes on one port, each a whole API instance (instances are stateless)",
    )
    commands.add_parser("runner", help="run a GPU runner")
    runners = commands.add_parser(
        "runners",
        help="run one runner per device (EASEL_DEVICE=cuda:N each; with EASEL_MODELS, one per device and model), "
        "restarting any that exits",
    )
    runners.add_argument("--gpus", default="all", help="all, GPU indexes such as 0,1, or cpu:N for N CPU runners")
    runners.add_argument(
        "--models", default="", metavar="A,B",
        help="with EASEL_MODELS: which models get a runner on each device (default: every one)",
    )
    commands.add_parser("topics", help="create Easel's topics (idempotent)")
    commands.add_parser("schema", help="print the JSON Schema of the request message")
    key_id = commands.add_parser("key-id", help="print the owner id of an API key (for Kafka producers)")
    key_id.add_argument("key")
    model = commands.add_parser("model", help="model tools")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    tiny = model_commands.add_parser("tiny", help="build the tiny random SDXL pipeline offline into DIR")
    tiny.add_argument("dir", type=Path)
    tiny_refiner = model_commands.add_parser("tiny-refiner", help="build a tiny random SDXL refiner offline into DIR")
    tiny_refiner.add_argument("dir", type=Path)
    tiny_lora = model_commands.add_parser(
        "tiny-lora", help="build a tiny seeded LoRA for the tiny model offline into DIR (as NAME.safetensors)"
    )
    tiny_lora.add_argument("dir", type=Path)
    tiny_lora.add_argument("--name", default="tiny")
    tiny_checker = model_commands.add_parser(
        "tiny-safety-checker", help="build a tiny safety checker offline into DIR (flags nothing, or everything)"
    )
    tiny_checker.add_argument("dir", type=Path)
    tiny_checker.add_argument("--flag-everything", action="store_true")
    from easel import generate

    generate.add_parser(commands)
    from easel import webhooks

    webhooks.add_parser(commands)

    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    match args.command:
        case "dev":
            from easel.dev import run_dev

            return run_dev(settings)
        case "kafka":
            return _run_kafka(settings)
        case "api":
            return _run_api(settings, args.workers)
        case "runner":
            return _run_runner(settings)
        case "runners":
            from easel.runners import run_runners

            return run_runners(settings, args.gpus, args.models)
        case "topics":
            from producers import ensure_topics

            asyncio.run(ensure_topics(settings))
            return 0
        case "schema":
            from contract.job import Job

            print(json.dumps(Job.model_json_schema(), indent=2))
            return 0
        case "key-id":
            from contract.keys import key_id as compute_key_id

            print(compute_key_id(args.key))
            return 0
        case "generate":
            return generate.run(args, settings)
        case "webhooks":
            return webhooks.run(args, settings)
        case "model":
            return _build_model(args)
    return 2


def _build_model(args: argparse.Namespace) -> int:
    from gpu_runner.tiny_model import save_tiny_refiner, save_tiny_sdxl

    if args.model_command == "tiny-refiner":
        print(save_tiny_refiner(args.dir))
    elif args.model_command == "tiny-lora":
        from gpu_runner.tiny_lora import save_tiny_lora

        print(save_tiny_lora(args.dir, args.name))
    elif args.model_command == "tiny-safety-checker":
        from gpu_runner.tiny_checker import save_tiny_checker

        print(save_tiny_checker(args.dir, args.flag_everything))
    else:
        print(save_tiny_sdxl(args.dir))
    return 0


def _run_kafka(settings: Settings) -> int:
    from easel.local_kafka import LocalKafka

    broker = LocalKafka(settings.home)
    broker.start()
    print(f"Kafka ready at {broker.bootstrap}", flush=True)
    # Stop from the main thread, not in the handler: a handler's Popen.wait() would deadlock with the
    # main thread's wait() it interrupted (they share a lock).
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        assert broker.process is not None
        return broker.process.wait()
    except KeyboardInterrupt:
        broker.stop()
        return 0


def _run_api(settings: Settings, workers: int = 1) -> int:
    import uvicorn

    from service import create_app
    from service.ws_streams import MAX_MESSAGE_BYTES

    # One process: the app built here. Several: uvicorn binds the port once, starts N processes that accept on
    # it (restarting any that dies), and each builds its own app (views, stream hub, purger) from `api_app`.
    app = create_app(settings) if workers <= 1 else "easel.cli:api_app"
    settle_gc()
    uvicorn.run(
        app, factory=workers > 1, workers=workers if workers > 1 else None,
        host=settings.host, port=settings.port, log_level="warning", access_log=False,
        # Keepalive pings find dead WebSocket peers; a stuck one is closed after the timeout.
        ws_ping_interval=settings.ws_ping_interval_s, ws_ping_timeout=settings.ws_ping_timeout_s,
        ws_max_size=MAX_MESSAGE_BYTES,  # a larger frame is refused from its header, unread
    )
    return 0


def api_app() -> Starlette:
    """The API of one `easel api --workers N` process (uvicorn calls it by name in each)."""
    from service import create_app

    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings)
    settle_gc()
    return app


def _run_runner(settings: Settings) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from contract.catalog import runner_settings
    from contract.errors import SettingsError
    from gpu_runner.pipeline import SDXLGenerator
    from gpu_runner.runner import GIL_SWITCH_INTERVAL_S, Runner

    try:
        settings = runner_settings(settings)  # with EASEL_MODELS: the model EASEL_MODEL_NAME picks
    except SettingsError as exc:
        print(f"easel runner: {exc}", file=sys.stderr)
        return 2
    generator = SDXLGenerator.from_settings(settings)
    settle_gc()  # the pipeline's objects
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # process-wide: this process is one runner
    run_until_stopped(Runner(settings, generator).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
