"""`CT_DNS_RESOLVERS`, parsed: a setting's syntax, checked when the settings load."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

DEFAULT_PORT: Final = 53


@dataclass(frozen=True, slots=True)
class Nameserver:
    host: str
    port: int = DEFAULT_PORT


def parse_resolvers(text: str) -> tuple[Nameserver, ...]:
    """`CT_DNS_RESOLVERS`: comma-separated `host:port` (`[v6]:port`; the port defaults to 53).

    Hosts are IP addresses: resolving the resolver's own name would need a resolver.
    """
    servers = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, port = item, DEFAULT_PORT
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                port = _port(rest.removeprefix(":"), item)
        elif item.count(":") == 1:
            host, _, rest = item.partition(":")
            port = _port(rest, item)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address with an optional :port") from None
        servers.append(Nameserver(host, port))
    if not servers:
        raise ValueError("no resolver given; leave it unset for the system's resolvers")
    return tuple(servers)


def _port(text: str, item: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{item!r} has no valid port")
    return int(text)
