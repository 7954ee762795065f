"""Loopback ports for servers the tests and benchmarks start."""

from __future__ import annotations

import os
import socket

_HANDED_OUT: set[tuple[int, int]] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nobody listens on right now, never the same one twice in a process.

    The kernel's pick (reused only much later), or with CT_TEST_PORT_RANGE=`low-high` one in
    that range, for a shared machine whose users each have theirs.
    """
    span = os.environ.get("CT_TEST_PORT_RANGE", "")
    candidates = [0] * 20
    if span:
        low, high = (int(part) for part in span.split("-"))
        start = os.getpid() % (high - low + 1)
        candidates = [low + (start + i) % (high - low + 1) for i in range(high - low + 1)]
    for candidate in candidates:
        if (kind, candidate) in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port: int = sock.getsockname()[1]
        # A server on a UDP port may listen on TCP there too (dnsmasq does): both must be free.
        if (kind, port) not in _HANDED_OUT and _free(port, socket.SOCK_STREAM):
            _HANDED_OUT.add((kind, port))
            return port
    raise RuntimeError(f"no free port (CT_TEST_PORT_RANGE={span!r})")


def _free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
