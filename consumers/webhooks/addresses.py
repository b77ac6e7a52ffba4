"""SSRF rules for webhook URLs: only http(s), and only public unicast addresses unless allow-listed.

Checked twice: when a job is submitted (so the client hears about it) and when the dispatcher
connects (the resolver and the socket factory in `connector.py` vet the very addresses it dials,
so a DNS answer that changed in between cannot sneak a private address in).

Only an address is ever refused. A name that does not resolve is not an SSRF matter: at delivery it
is UnresolvedHost, retried on the schedule like a refused connection (DNS fails transiently, EAI_AGAIN,
and a receiver's name may not exist yet or come back: NXDOMAIN is retried too, the schedule bounds it).
At submit, a name that does not exist (EAI_NONAME) is refused so the client hears of a typo at once;
a transient failure lets the job through, since the dispatcher vets again when it connects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port → the addresses the name resolves to (raises socket.gaierror or OSError when it does not).
Lookup = Callable[[str, int], Awaitable[list[str]]]
# getaddrinfo's answers meaning "no such name" (EAI_NODATA: the name exists but has no address; not on every OS).
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}

# Named classes first, so the refusal says which rule applies; anything else not global is refused last.
_CLASSES: tuple[tuple[str, IPNetwork], ...] = tuple(
    (name, ipaddress.ip_network(cidr))
    for name, cidr in (
        ("an unspecified", "0.0.0.0/8"),
        ("an unspecified", "::/128"),
        ("a loopback", "127.0.0.0/8"),
        ("a loopback", "::1/128"),
        ("a link-local", "169.254.0.0/16"),  # includes the cloud metadata address 169.254.169.254
        ("a link-local", "fe80::/10"),
        ("a private", "10.0.0.0/8"),
        ("a private", "172.16.0.0/12"),
        ("a private", "192.168.0.0/16"),
        ("a private", "fc00::/7"),
        ("a carrier-grade NAT", "100.64.0.0/10"),  # not `is_private` before CPython 3.12.4
        ("a multicast", "224.0.0.0/4"),
        ("a multicast", "ff00::/8"),
        ("an IPv4-mapped IPv6", "::ffff:0:0/96"),
        ("a NAT64", "64:ff9b::/96"),
        ("a local NAT64", "64:ff9b:1::/48"),
        ("a 6to4", "2002::/16"),  # wraps any IPv4 address, private ones included
        ("an IPv4-compatible IPv6", "::/96"),  # after ::/128 and ::1/128, which name themselves
        ("a site-local", "fec0::/10"),
        ("a broadcast", "255.255.255.255/32"),
        ("a reserved", "240.0.0.0/4"),
    )
)


class BlockedAddress(OSError):
    """The URL or an address it resolves to is not allowed. Never retried.

    An OSError so that aiohttp passes it through its connector (as `os_error`) unchanged.
    """


class UnresolvedHost(OSError):
    """The host's name did not resolve (DNS away or slow, or no such name). Retried like a refused connection."""

    def __init__(self, host: str, cause: OSError) -> None:
        super().__init__(cause.errno, f"{host} did not resolve: {cause.strerror or type(cause).__name__}")
        self.no_such_name = isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_NAME


async def system_lookup(host: str, port: int) -> list[str]:
    """The system resolver (getaddrinfo, in the event loop's thread pool)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class AddressPolicy:
    allowed: tuple[IPNetwork, ...] = ()
    lookup: Lookup = field(default=system_lookup, compare=False)

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> AddressPolicy:
        try:
            return cls(tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs))
        except ValueError as exc:
            raise ValueError(f"EASEL_WEBHOOK_ALLOW_NETWORKS: {exc}") from None

    def check_address(self, address: str | IPAddress) -> None:
        """Raise BlockedAddress unless `address` is public unicast or allow-listed."""
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
        if any(ip in network for network in self.allowed):
            return
        for name, network in _CLASSES:
            if ip.version == network.version and ip in network:
                raise BlockedAddress(f"{ip} is {name} address")
        if not ip.is_global:
            raise BlockedAddress(f"{ip} is not a public address")

    def check_url(self, url: str) -> tuple[str, int]:
        """(host, port) of an http(s) URL; a literal IP host is checked here, a name when resolved."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise BlockedAddress("only http and https URLs are allowed")
        host = parts.hostname
        if not host:
            raise BlockedAddress("the URL has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise BlockedAddress("the URL has an invalid port") from None
        if _is_literal(host):
            self.check_address(host)
        return host, port

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address `host` resolves to, each vetted; refuses the host if any one is blocked.

        UnresolvedHost when the name does not resolve (TimeoutError, when the lookup is cut short, passes as is).
        """
        if _is_literal(host):
            self.check_address(host)
            return [host]
        try:
            addresses = list(dict.fromkeys(await self.lookup(host, port)))
        except TimeoutError:
            raise
        except OSError as exc:  # socket.gaierror, or the resolver's own failure
            raise UnresolvedHost(host, exc) from exc
        for address in addresses:
            try:
                self.check_address(address)
            except BlockedAddress as exc:
                raise BlockedAddress(f"{host} resolves to {exc}") from None
        return addresses

    async def vet_url(self, url: str) -> None:
        """The submit-time check: scheme, host, and every address the host resolves to now.

        A name that does not exist is refused; one whose lookup failed for now passes (vetted again at delivery).
        """
        host, port = self.check_url(url)
        try:
            await self.resolve(host, port)
        except UnresolvedHost as exc:
            if exc.no_such_name:
                raise BlockedAddress(f"{host} does not resolve") from None


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
