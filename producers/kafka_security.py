"""How every Easel Kafka client authenticates: the aiokafka keyword arguments made from `Settings`.

Each client factory (producer, consumers, admin) spreads `client_security(settings)` into its constructor,
so no client can connect with other credentials than the process's own.
"""

from __future__ import annotations

import ssl
from typing import TypedDict

from aiokafka.helpers import create_ssl_context

from contract.errors import SettingsError
from contract.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
# The user + password mechanisms aiokafka speaks; SCRAM keeps the password off the wire.
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class ClientSecurity(TypedDict, total=False):
    security_protocol: str
    sasl_mechanism: str
    sasl_plain_username: str
    sasl_plain_password: str
    ssl_context: ssl.SSLContext


def client_security(settings: Settings) -> ClientSecurity:
    """The security arguments of an aiokafka client; nothing for PLAINTEXT. Raises SettingsError when incomplete."""
    protocol = _one_of("EASEL_KAFKA_SECURITY_PROTOCOL", settings.kafka_security_protocol, PROTOCOLS)
    if protocol == "PLAINTEXT":
        return {}
    mechanism = _one_of("EASEL_KAFKA_SASL_MECHANISM", settings.kafka_sasl_mechanism, MECHANISMS)
    if not settings.kafka_username or not settings.kafka_password:
        raise SettingsError(f"{protocol} needs EASEL_KAFKA_USERNAME and EASEL_KAFKA_PASSWORD")
    security = ClientSecurity(
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_plain_username=settings.kafka_username,
        sasl_plain_password=settings.kafka_password,
    )
    if protocol == "SASL_SSL":
        try:
            security["ssl_context"] = create_ssl_context(cafile=settings.kafka_ca_file or None)
        except OSError as exc:  # a missing file, or one that holds no certificate (ssl.SSLError)
            raise SettingsError(f"EASEL_KAFKA_CA_FILE={settings.kafka_ca_file!r} is not a readable PEM file") from exc
    return security


def _one_of(variable: str, value: str, allowed: tuple[str, ...]) -> str:
    if value.upper() not in allowed:
        raise SettingsError(f"{variable}={value!r} is not one of {', '.join(allowed)}")
    return value.upper()
