"""Input images for the img2img tests: small PNGs as base64, a decompression bomb's header, a local image server,
and what a stack's blob folder holds."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web
from PIL import Image

from tests.processes import Stack, free_port


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def mask_png(width: int, height: int) -> bytes:
    """White (repainted) on the right half, black (kept) on the left."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 2, 0, width, height))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A few dozen bytes whose header claims `width` × `height` pixels (nothing past the header is valid)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(
        b"IEND", b""
    )


def stored_files(stack: Stack) -> list[Path]:
    """Every file in the stack's blob folder."""
    return sorted(path for path in (stack.workdir / "blobs").rglob("*") if path.is_file())


def input_files(stack: Stack) -> list[Path]:
    """The input images the stack's API stored (init.png, mask.png), in any job's folder."""
    return [path for path in stored_files(stack) if path.name in ("init.png", "mask.png")]


@contextmanager
def image_server(files: dict[str, bytes]) -> Iterator[str]:
    """An aiohttp server on 127.0.0.1 serving `files` by name, in its own thread; yields its base URL."""
    port = free_port()
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def serve(request: web.Request) -> web.Response:
        data = files.get(request.match_info["name"])
        return web.Response(status=404) if data is None else web.Response(body=data, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
