"""The health and metrics endpoint's routes, as the orchestrator and Prometheus see them."""

from __future__ import annotations

import asyncio

from worker.core.http import route
from worker.core.service import Service


class Fake(Service):
    def __init__(self, name: str, ready: bool) -> None:
        self.name = name
        self._ready = ready

    async def run(self, stopping: asyncio.Event) -> None:
        await stopping.wait()

    def is_ready(self) -> bool:
        return self._ready


def _parse(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert int(headers["Content-Length"]) == len(body)
    return status, headers, body


def test_readyz_is_200_only_when_every_service_is_ready() -> None:
    status, _, body = _parse(route("/readyz", [Fake("notifier", True), Fake("relay", True)]))
    assert status == "HTTP/1.0 200 OK"
    assert body == b"notifier ready\nrelay ready\n"
    status, _, body = _parse(route("/readyz", [Fake("notifier", True), Fake("relay", False)]))
    assert status == "HTTP/1.0 503 Service Unavailable"
    assert b"relay not ready" in body


def test_healthz_answers_while_the_process_lives_whatever_readiness_says() -> None:
    status, _, body = _parse(route("/healthz", [Fake("notifier", False)]))
    assert (status, body) == ("HTTP/1.0 200 OK", b"ok\n")


def test_metrics_are_prometheus_text() -> None:
    status, headers, body = _parse(route("/metrics", []))
    assert status == "HTTP/1.0 200 OK"
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert b"# TYPE ct_events_consumed_total counter" in body


def test_anything_else_is_404() -> None:
    status, _, _ = _parse(route("/admin", []))
    assert status == "HTTP/1.0 404 Not Found"
