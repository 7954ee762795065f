"""A real DNS server on loopback for the tests: Debian's dnsmasq, authoritative for every name.

Tests publish the records a scenario needs (SPF and DMARC TXT records, DKIM public keys, MX and A
records) and `apply()` them; the server answers NXDOMAIN for every other name, so no lookup ever
leaves the machine. dnsmasq reads its `txt-record` lines only at start, so `apply()` restarts it on
the same port: cheap (milliseconds), and a resolver that caches sees new answers only after their
TTL, exactly as with a real zone (`ttl` below).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port

DNSMASQ_HINT = "dnsmasq not found: `make tools` installs Debian's dnsmasq-base"
# RFC 1035: one character-string of a TXT record holds at most 255 octets.
_TXT_CHUNK = 255


def _quoted_chunks(text: str) -> str:
    if '"' in text or "\\" in text or "\n" in text:
        raise ValueError("TXT test records hold no quotes, backslashes or line breaks")
    chunks = [text[i : i + _TXT_CHUNK] for i in range(0, len(text), _TXT_CHUNK)] or [""]
    return ",".join(f'"{chunk}"' for chunk in chunks)


@dataclass
class Zone:
    """The records the server answers with; names are absolute, without the trailing dot."""

    txt: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    a: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    mx: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    # Names whose lookups fail with SERVFAIL (forwarded to a server that is not there).
    failing: set[str] = field(default_factory=set)

    def config_lines(self, dead_upstream_port: int) -> list[str]:
        lines = []
        for name, values in self.txt.items():
            lines += [f"txt-record={name},{_quoted_chunks(value)}" for value in values]
        for name, addresses in self.a.items():
            lines += [f"host-record={name},{address}" for address in addresses]
        for name, exchangers in self.mx.items():
            lines += [f"mx-host={name},{host},{pref}" for host, pref in exchangers]
        lines += [f"server=/{name}/127.0.0.1#{dead_upstream_port}" for name in self.failing]
        return lines


class LoopbackDns:
    """One dnsmasq process on 127.0.0.1:`port` (UDP and TCP) serving `zone`."""

    def __init__(self, directory: Path, *, ttl: int = 300) -> None:
        self.directory = directory
        self.ttl = ttl
        self.port = free_port(socket.SOCK_DGRAM)
        self.zone = Zone()
        self._process: subprocess.Popen[bytes] | None = None
        # Nothing listens here, so names forwarded to it time out in dnsmasq: SERVFAIL.
        self._dead_port = free_port(socket.SOCK_DGRAM)
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def resolver(self) -> str:
        """The `host:port` form CT_DNS_RESOLVERS takes."""
        return f"127.0.0.1:{self.port}"

    def publish_txt(self, name: str, value: str) -> None:
        self.zone.txt[name.rstrip(".").lower()].append(value)

    def publish_a(self, name: str, address: str) -> None:
        self.zone.a[name.rstrip(".").lower()].append(address)

    def publish_mx(self, name: str, host: str, preference: int = 10) -> None:
        self.zone.mx[name.rstrip(".").lower()].append((host, preference))

    def fail(self, name: str) -> None:
        """Every lookup of `name` and the names below it ends in SERVFAIL."""
        self.zone.failing.add(name.rstrip(".").lower())

    def clear(self) -> None:
        self.zone = Zone()

    def apply(self) -> None:
        """(Re)start the server with the zone as it is now, and wait until it answers."""
        binary = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
        if binary is None:
            raise RuntimeError(DNSMASQ_HINT)
        self.stop()
        config = self.directory / "dnsmasq.conf"
        lines = [
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "no-negcache",
            f"local-ttl={self.ttl}",
            # Authoritative for everything else: unknown names are NXDOMAIN, never forwarded.
            "local=/#/",
            f"pid-file={self.directory / 'dnsmasq.pid'}",
            f"log-facility={self.directory / 'dnsmasq.log'}",
            *self.zone.config_lines(self._dead_port),
        ]
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._process = subprocess.Popen(
            [binary, "--keep-in-foreground", f"--conf-file={config}", "--user=root"],
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "dnsmasq.err").open("ab"),
        )
        self._wait_until_answering()

    def _wait_until_answering(self, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                error = (self.directory / "dnsmasq.err").read_text(errors="replace")[-500:]
                raise RuntimeError(f"dnsmasq exited at start: {error}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"dnsmasq did not answer on 127.0.0.1:{self.port} within {within}s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
