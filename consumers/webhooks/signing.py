"""Standard Webhooks signatures (`v1`, HMAC-SHA256 over `id.timestamp.body`), made by the reference library."""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks import Webhook

from contract.errors import SettingsError
from contract.settings import Settings


class Signer:
    """Signs with the job owner's secret when one is configured for that API key id, else the global one."""

    def __init__(self, default: str, per_owner: dict[str, str]) -> None:
        if not default and not per_owner:
            raise SettingsError("EASEL_WEBHOOK_SECRET is required: a Standard Webhooks secret, whsec_<base64>")
        self._default = _webhook(default, "EASEL_WEBHOOK_SECRET") if default else None
        self._per_owner = {
            owner: _webhook(secret, f"EASEL_WEBHOOK_KEY_SECRETS ({owner})") for owner, secret in per_owner.items()
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        per_owner: dict[str, str] = {}
        for entry in settings.webhook_key_secrets:
            owner, sep, secret = entry.partition("=")
            if not sep or not owner.strip() or not secret.strip():
                raise SettingsError("EASEL_WEBHOOK_KEY_SECRETS: entries are KEYID=whsec_...")
            per_owner[owner.strip()] = secret.strip()
        return cls(settings.webhook_secret, per_owner)

    def headers(self, owner: str, msg_id: str, body: str) -> dict[str, str]:
        webhook = self._per_owner.get(owner) or self._default
        if webhook is None:
            raise SettingsError(f"no webhook secret for API key id {owner} and no EASEL_WEBHOOK_SECRET")
        # Aware UTC: the library relabels any timezone as UTC rather than converting it.
        now = datetime.now(UTC)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": webhook.sign(msg_id, now, body),
        }


def _webhook(secret: str, name: str) -> Webhook:
    if not secret.startswith("whsec_"):
        raise SettingsError(f"{name}: must be a whsec_ secret")
    try:
        return Webhook(secret)
    except Exception as exc:  # binascii.Error or the library's EmptyWebhookSecretError
        raise SettingsError(f"{name}: not a valid whsec_ secret ({type(exc).__name__})") from None
