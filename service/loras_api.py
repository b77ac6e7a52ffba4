"""AUTOMATIC1111's `GET /sdapi/v1/loras`: the LoRA adapters jobs may name, in A1111's shape.

A1111 answers `[{name, alias, path, metadata}]`, the metadata being the safetensors header's `__metadata__` with
JSON-looking values parsed. `path` is the file's name in EASEL_LORA_DIR: the server's folders stay its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contract.loras import LoraFolder
from service.state import AppState


async def loras(request: Request) -> Response:
    app: AppState = request.app.state.easel
    app.keys.authenticate(request, basic=True)
    # Reading the folder and each file's header is blocking file I/O.
    return JSONResponse(await run_in_threadpool(lora_listing, LoraFolder.from_settings(app.settings)))


def lora_listing(folder: LoraFolder) -> list[dict[str, Any]]:
    return [
        {"name": name, "alias": name, "path": folder.file_of(name).name, "metadata": _metadata(folder.file_of(name))}
        for name in folder.names()
    ]


def _metadata(path: Path) -> dict[str, Any]:
    """The file's training metadata as A1111 reads it; {} for a file that is no readable safetensors."""
    try:
        with safe_open(str(path), "numpy") as file:  # "numpy": reading a header needs no torch in the API
            header: dict[str, str] = file.metadata() or {}
    except Exception:  # listed all the same: loading it is where it fails, with its own error
        return {}
    return {key: _parsed(value) for key, value in header.items()}


def _parsed(value: str) -> Any:
    if value.startswith("{"):  # kohya's ss_tag_frequency, ss_dataset_dirs...: JSON objects in strings
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value
