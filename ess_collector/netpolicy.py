"""Which networks a site may be in. Site registration and the collector refuse every other address.

Without this, a site is a way to make the server connect to any host and port. A site's host is resolved
and *every* address it resolves to must lie inside an allowed network. The collector checks this again
each time it opens a connection, and connects to the very address it checked, so a name that later
resolves somewhere else (DNS rebinding) is not followed. The default is the private and loopback ranges:
link-local (169.254.0.0/16, where cloud metadata services live) and every public address stay out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address

DEFAULT_SITE_NETWORKS_TEXT = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"


class SiteHostRefused(ValueError):
    """A site host that may not be polled; the message says why, for the person registering it."""


class HostOutsideSiteNetworks(SiteHostRefused):
    pass


class HostDoesNotResolve(SiteHostRefused):
    pass


def parse_networks(values: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR networks from a comma-separated string or a list; host bits set (10.0.0.1/8) are refused."""
    items = values.split(",") if isinstance(values, str) else values
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            out.append(ipaddress.ip_network(text))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a CIDR network (e.g. 192.168.0.0/16): {exc}") from None
    return tuple(out)


DEFAULT_SITE_NETWORKS = parse_networks(DEFAULT_SITE_NETWORKS_TEXT)


def address_allowed(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:10.0.0.1 is 10.0.0.1
            address = address.ipv4_mapped
        elif address.scope_id:  # fe80::1%eth0: the scope does not change where it is
            address = IPv6Address(str(address).split("%", 1)[0])
    return any(address in network for network in networks)


def _allowed(host: str, infos: list[tuple[Any, ...]], networks: Sequence[IPNetwork]) -> list[str]:
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise HostDoesNotResolve(f"{host} does not resolve to any address")
    for text in addresses:
        if not address_allowed(ipaddress.ip_address(text), networks):
            # The addresses of a name are not echoed: they are what the server's resolver sees.
            raise HostOutsideSiteNetworks(
                f"{host} is outside the networks sites may be in (ESSX_SITE_NETWORKS)"
                if _is_literal(host)
                else f"{host} resolves to an address outside the networks sites may be in (ESSX_SITE_NETWORKS)"
            )
    return addresses


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve_allowed(host: str, port: int, networks: Sequence[IPNetwork]) -> list[str]:
    """Every address ``host`` resolves to, if all lie inside ``networks``; else SiteHostRefused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise HostDoesNotResolve(f"{host} does not resolve") from None
    return _allowed(host, infos, networks)


async def resolve_allowed_async(host: str, port: int, networks: Sequence[IPNetwork]) -> list[str]:
    """As ``resolve_allowed``, on the running loop's resolver."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise HostDoesNotResolve(f"{host} does not resolve") from None
    return _allowed(host, infos, networks)
