"""`easel generate "prompt" -o out.png`: submit over HTTP, follow the job's WebSocket stream with a
progress bar, save the images. Exit codes: 0 saved, 1 the job did not complete (the reason is
printed), 3 the service refused the request or could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from tqdm import tqdm

from contract.samplers import SAMPLERS, SCHEDULES
from contract.settings import Settings

EXIT_JOB_FAILED = 1
EXIT_REFUSED = 3
RECONNECTS = 5
_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


class Refused(Exception):
    """The service said no (4xx/5xx), or could not be reached."""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("generate", help="generate images over HTTP with a live progress bar")
    parser.add_argument("prompt")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("out.png"), help="image path; more images get -1, -2, ..."
    )
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--sampler", default="Euler", choices=SAMPLERS)
    parser.add_argument("--schedule", default="automatic", choices=SCHEDULES)
    parser.add_argument("--num-images", type=int, default=1)
    parser.add_argument(
        "--url", default=None, help="the API (default: EASEL_PUBLIC_URL or http://EASEL_HOST:EASEL_PORT)"
    )
    parser.add_argument("--key", default=None, help="API key (default: EASEL_DEV_KEY or $EASEL_HOME/dev-key)")
    parser.add_argument(
        "--execution-timeout", type=float, default=None, help="the job ends TIMED_OUT if it runs longer"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="stop waiting after this many seconds")


def run(args: argparse.Namespace, settings: Settings) -> int:
    key = args.key or settings.dev_key or _dev_key_file(settings)
    if not key:
        print("error: no API key: pass --key (or run `make run`, which writes $EASEL_HOME/dev-key)", file=sys.stderr)
        return EXIT_REFUSED
    body: dict[str, Any] = {
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "width": args.width,
        "height": args.height,
        "steps": args.steps,
        "guidance": args.guidance,
        "seed": args.seed,
        "sampler": args.sampler,
        "schedule": args.schedule,
        "num_images": args.num_images,
        "output_format": _FORMATS.get(args.output.suffix.lower(), "png"),
    }
    if args.execution_timeout is not None:
        body["execution_timeout_s"] = args.execution_timeout
    try:
        return asyncio.run(
            asyncio.wait_for(
                _generate((args.url or settings.base_url).rstrip("/"), key, body, args.output), args.timeout
            )
        )
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except TimeoutError:
        print(f"error: no result within {args.timeout:g} s", file=sys.stderr)
        return EXIT_JOB_FAILED


async def _generate(base_url: str, key: str, body: dict[str, Any], output: Path) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        job = await _request(session, "POST", f"{base_url}/v1/jobs", json=body)
        with tqdm(total=body["steps"], unit="step", desc="queued", file=sys.stderr, dynamic_ncols=True) as bar:
            terminal = await _follow(session, base_url, job["id"], bar)
        if terminal["type"] != "completed":
            print(
                f"job {job['id']} {terminal['type']}: {terminal['data'].get('error') or 'no reason given'}",
                file=sys.stderr,
            )
            return EXIT_JOB_FAILED
        for index, out in enumerate(terminal["data"]["outputs"]):
            path = output if index == 0 else output.with_name(f"{output.stem}-{index}{output.suffix}")
            async with session.get(out["url"]) as response:
                if response.status != 200:
                    raise Refused(f"could not download {out['url']}: HTTP {response.status}")
                path.write_bytes(await response.read())
            print(f"saved {path} ({out['width']}x{out['height']}, seed {out['seed']})", file=sys.stderr)
    return 0


async def _follow(session: aiohttp.ClientSession, base_url: str, job_id: str, bar: tqdm[Any]) -> dict[str, Any]:
    """The job's terminal event, updating `bar` on the way; reconnects with `since` if the stream drops."""
    ws_url = "ws" + base_url.removeprefix("http") + f"/v1/jobs/{job_id}/stream"
    last_seq = -1
    for _ in range(RECONNECTS):
        try:
            async with session.ws_connect(
                ws_url, params={"since": str(last_seq), "previews": "false"}, heartbeat=30
            ) as ws:
                async for message in ws:
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        break
                    event = orjson.loads(message.data)
                    if event.get("type") == "error":
                        raise Refused(event.get("message", "the stream was refused"))
                    last_seq = event["seq"]
                    _show(bar, event)
                    if event["type"] in ("completed", "failed", "cancelled", "timed_out"):
                        return dict(event)
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(1.0)
    job = await _request(session, "GET", f"{base_url}/v1/jobs/{job_id}")
    raise Refused(f"lost the stream of job {job_id} ({job.get('status', 'status unknown')}); "
                  f"check it with GET {base_url}/v1/jobs/{job_id}")


def _show(bar: tqdm[Any], event: dict[str, Any]) -> None:
    data = event["data"]
    if event["type"] == "queued":
        bar.set_description(f"queued (position {data.get('queue_position', '?')})")
    elif event["type"] == "started":
        bar.set_description("generating")
    elif event["type"] == "progress":
        bar.n = data["step"]
        bar.set_postfix({"it/s": data["it_per_s"], "eta": f"{data['eta_s']:.1f}s"})
    elif event["type"] == "completed":
        bar.n = bar.total
        bar.set_description("done")
        bar.refresh()


async def _request(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        async with session.request(method, url, **kwargs) as response:
            payload = await response.read()
    except aiohttp.ClientError as exc:
        raise Refused(f"cannot reach {url}: {exc}") from None
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        data = {}
    if response.status >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise Refused(f"HTTP {response.status}: {error.get('message', payload[:200].decode(errors='replace'))}")
    return dict(data)


def _dev_key_file(settings: Settings) -> str:
    path = settings.home / "dev-key"
    return path.read_text().strip() if path.exists() else ""
