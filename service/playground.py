"""The playground at `/`: one HTML page with its script and style, no CDN, so it works offline."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from contract.errors import NotFound
from contract.samplers import SAMPLERS

STATIC = Path(__file__).resolve().parent / "static"
_ASSETS = {"playground.js": "text/javascript", "playground.css": "text/css"}


async def playground(request: Request) -> Response:
    return HTMLResponse(_page())


@cache
def _page() -> str:
    """The page with the sampler choices of the contract's registry (defined once, there)."""
    options = "".join(f"<option>{html.escape(name)}</option>" for name in SAMPLERS)
    return (STATIC / "playground.html").read_text().replace("<!-- SAMPLER OPTIONS -->", options)


async def playground_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _ASSETS:  # a fixed list: never a path from the client
        raise NotFound(f"no asset {name}")
    return FileResponse(STATIC / name, media_type=_ASSETS[name])
