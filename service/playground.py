"""The playground at `/`: one HTML page with its script and style, no CDN, so it works offline."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from contract.errors import NotFound

STATIC = Path(__file__).resolve().parent / "static"
_ASSETS = {"playground.js": "text/javascript", "playground.css": "text/css"}


async def playground(request: Request) -> Response:
    return FileResponse(STATIC / "playground.html", media_type="text/html")


async def playground_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _ASSETS:  # a fixed list: never a path from the client
        raise NotFound(f"no asset {name}")
    return FileResponse(STATIC / name, media_type=_ASSETS[name])
