"""/metrics, /healthz and /readyz for one worker process.

Three GET routes do not justify a web framework in every worker; prometheus_client renders the
metrics and asyncio's own server speaks just enough HTTP/1.0 for Prometheus and Kubernetes probes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.core.config import Settings
from worker.core.service import Service


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


def route(path: str, services: Sequence[Service]) -> bytes:
    if path == "/metrics":
        return _response("200 OK", generate_latest(), CONTENT_TYPE_LATEST)
    if path == "/healthz":
        return _response("200 OK", b"ok\n")
    if path == "/readyz":
        states = {s.name: s.is_ready() for s in services}
        body = "".join(f"{name} {'ready' if ok else 'not ready'}\n" for name, ok in states.items())
        return _response(
            "200 OK" if all(states.values()) else "503 Service Unavailable", body.encode()
        )
    return _response("404 Not Found", b"not found\n")


async def serve_http(settings: Settings, services: Sequence[Service]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 and parts[0] == "GET" else ""
            writer.write(route(path, services) if path else _response("400 Bad Request", b""))
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, settings.http_host, settings.http_port)
