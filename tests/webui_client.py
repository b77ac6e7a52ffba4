"""The stock A1111 client, `webuiapi`, pointed at a stack: HTTP Basic with an Easel key as the password."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import webuiapi

from tests.processes import Stack


@contextmanager
def webui_client(stack: Stack, password: str | None = None) -> Iterator[webuiapi.WebUIApi]:
    """A client authenticated with `password` (the stack's key by default); its session closed on exit."""
    client = webuiapi.WebUIApi(baseurl=f"{stack.base_url}/sdapi/v1")
    client.set_auth("easel-user", password or stack.key)
    try:
        yield client
    finally:
        client.session.close()
