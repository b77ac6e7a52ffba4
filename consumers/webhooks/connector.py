"""The aiohttp connector webhooks go out through: it resolves once, vets, and dials only vetted addresses.

The resolver returns the addresses `AddressPolicy.resolve` vetted, and aiohttp connects to exactly
those (Host header and TLS SNI keep the original name), so there is no second lookup to rebind.
The socket factory vets again right before each connect; that also covers literal-IP URLs, which
aiohttp never passes to the resolver.
"""

from __future__ import annotations

import socket

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

from consumers.webhooks.addresses import AddressPolicy


class VettingResolver(AbstractResolver):
    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._policy.resolve(host, port)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


def vetted_connector(policy: AddressPolicy, limit: int, limit_per_host: int) -> aiohttp.TCPConnector:
    def socket_factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, address = addr_info
        policy.check_address(str(address[0]))
        return socket.socket(family=family, type=type_, proto=proto)

    return aiohttp.TCPConnector(
        resolver=VettingResolver(policy),
        socket_factory=socket_factory,
        limit=limit,
        limit_per_host=limit_per_host,
        ttl_dns_cache=60,
    )
