"""Webhooks in the API: the submit-time SSRF check, and the delivery state shown with a job."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any

from consumers.webhooks.addresses import AddressPolicy, BlockedAddress
from consumers.webhooks.status_view import DeliveryView
from contract.deliveries import DeliveryStatus
from contract.errors import InvalidField
from contract.job import WebhookSpec
from contract.settings import Settings

RESOLVE_TIMEOUT_S = 3.0


@lru_cache(maxsize=4)
def _policy(allowed: tuple[str, ...]) -> AddressPolicy:
    return AddressPolicy.from_cidrs(allowed)


async def vet_webhook(settings: Settings, webhook: WebhookSpec | None, field: str = "webhook.url") -> None:
    """InvalidField naming `field` when the URL is not http(s) or its host resolves to an address we refuse."""
    if webhook is None:
        return
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            await _policy(settings.webhook_allow_networks).vet_url(str(webhook.url))
    except BlockedAddress as exc:
        raise InvalidField(f"not allowed: {exc}", field) from None
    except TimeoutError:
        raise InvalidField("its host did not resolve in time", field) from None


def start_delivery_view(settings: Settings) -> DeliveryView:
    view = DeliveryView(settings)
    view.start_in_background()
    return view


def render_deliveries(statuses: list[DeliveryStatus]) -> dict[str, Any] | None:
    """The job's webhook state: that of its latest delivery, and every delivery."""
    if not statuses:
        return None
    latest = statuses[-1]
    return {
        "state": latest.state.value,
        "attempts": latest.attempts,
        "deliveries": [
            {
                "id": s.id,
                "event": s.event,
                "state": s.state.value,
                "attempts": s.attempts,
                "status_code": s.status_code,
                "error": s.error,
                "next_attempt_at": s.next_attempt_at,
                "updated_at": s.updated_at,
            }
            for s in statuses
        ],
    }
