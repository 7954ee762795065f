"""Asynchronous DNS for sender authentication: dnspython's asyncio resolver, answers cached.

dnspython because it is the DNS library of the Python mail stack (pyspf, dkimpy and checkdmarc
all use it), its `asyncresolver` never blocks the loop, and its `LRUCache` keeps every answer,
NXDOMAIN and NODATA included, for exactly its TTL (the SOA minimum for negative answers), so a
repeated sender costs no lookup. A lookup returns plain values; a timeout or SERVFAIL raises
`DnsUnavailable`, which the relay answers with `451 4.4.3` rather than guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from worker.core.nameservers import DEFAULT_PORT, Nameserver, parse_resolvers

__all__ = ["DEFAULT_PORT", "DnsClient", "DnsUnavailable", "Nameserver", "parse_resolvers"]

RecordType = Literal["A", "AAAA", "MX", "PTR", "TXT"]
# What a lookup returns per record type: addresses and host names as text, MX as
# (preference, exchange), TXT as the record's character-strings (bytes, unjoined).
Record = str | tuple[int, str] | tuple[bytes, ...]


class DnsUnavailable(Exception):
    """No definite answer (timeout, SERVFAIL, no server reachable): the caller must not guess."""

    def __init__(self, name: str, rdtype: str, cause: str) -> None:
        super().__init__(f"{rdtype} {name}: {cause}")
        self.name = name
        self.rdtype = rdtype


class DnsClient:
    """Lookups through the configured resolvers (default: the system's), cached for their TTL."""

    def __init__(
        self,
        nameservers: Sequence[Nameserver] | None = None,
        *,
        timeout_s: float = 5.0,
        cache_size: int = 10_000,
    ) -> None:
        # configure=False with explicit servers: the system's resolv.conf is not even read.
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(server.host, server.port) for server in nameservers
            ]
        # The whole lookup, retries across servers included, within one bound.
        resolver.lifetime = timeout_s
        resolver.timeout = min(timeout_s, 2.0)
        resolver.cache = dns.resolver.LRUCache(cache_size)
        self._resolver = resolver

    async def lookup(self, name: str, rdtype: RecordType) -> tuple[Record, ...]:
        """The records of (name, type); empty for NXDOMAIN or no data; DnsUnavailable otherwise."""
        try:
            answer = await self._resolver.resolve(
                dns.name.from_text(name), rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return ()
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsUnavailable(name, rdtype, type(exc).__name__) from exc
        except dns.exception.DNSException as exc:
            # A malformed name (an empty or over-long label) has no records by definition.
            if isinstance(exc, dns.name.NameTooLong | dns.name.LabelTooLong | dns.name.EmptyLabel):
                return ()
            raise DnsUnavailable(name, rdtype, type(exc).__name__) from exc
        if answer.rrset is None:
            return ()
        return tuple(_value(rdata, rdtype) for rdata in answer.rrset)

    async def txt(self, name: str) -> tuple[bytes, ...]:
        """Each TXT record of `name`, its character-strings joined (DKIM keys, DMARC records)."""
        records = await self.lookup(name, "TXT")
        return tuple(
            b"".join(s for s in r if isinstance(s, bytes)) for r in records if isinstance(r, tuple)
        )


def _value(rdata: object, rdtype: RecordType) -> Record:
    if rdtype in ("A", "AAAA"):
        return str(rdata.address)  # type: ignore[attr-defined]
    if rdtype == "MX":
        return (int(rdata.preference), rdata.exchange.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
    if rdtype == "PTR":
        return str(rdata.target.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
    return tuple(bytes(s) for s in rdata.strings)  # type: ignore[attr-defined]
