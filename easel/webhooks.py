"""`easel webhooks` runs the dispatcher; `easel webhooks replay` re-sends dead-lettered deliveries."""

from __future__ import annotations

import argparse
import asyncio

from contract.settings import Settings
from easel.lifecycle import run_until_stopped, settle_gc


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    webhooks = commands.add_parser("webhooks", help="run the webhook dispatcher; `replay` re-sends dead letters")
    actions = webhooks.add_subparsers(dest="webhooks_command")
    replay = actions.add_parser("replay", help="re-send dead-lettered webhooks: --all, or --job / --url")
    replay.add_argument("--all", action="store_true", help="every dead letter")
    replay.add_argument("--job", help="only this job id's")
    replay.add_argument("--url", help="only those to this exact URL (also re-enables it after a 410)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.webhooks_command == "replay":
        return _replay(args, settings)
    from consumers.webhooks.dispatcher import Dispatcher

    settle_gc()
    run_until_stopped(Dispatcher(settings).run())
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.webhooks.replay import replay

    if not (args.all or args.job or args.url):
        print("say what to replay: --all, --job ID or --url URL")
        return 2
    replayed = asyncio.run(replay(settings, job_id=args.job, url=args.url))
    for delivery in replayed:
        print(f"{delivery.id}  job {delivery.job_id}  {delivery.event}  {delivery.url}")
    print(f"{len(replayed)} deliveries replayed")
    return 0
