"""An OMS's producers as they are: each framing a bus carries, written without our codec.

The registry is reached with plain httpx (not worker/adapters/schema_registry.py), the Avro
body with fastavro against the schema file, the CloudEvents with the `cloudevents` SDK: what a
test proves about our reader does not rest on our writer.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import io
import json
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings.kafka import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from fastavro import parse_schema, schemaless_writer

from tests.support.net import free_port
from worker.adapters.kafka_client import client_options
from worker.contracts.cloudevents_json import ORDER_STATUS_TYPE
from worker.contracts.events import OrderStatusChanged
from worker.core.config import Settings

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "local" / "stack"
ORDER_STATUS_AVSC = REPO / "schemas" / "order_status.avsc"
Headers = list[tuple[str, bytes]]


def registry_url() -> str:
    """The stack's registry, started by `deploy/local/stack up registry` when it is not running
    (the first time that builds it: a minute or two). Raises with the stack's output if not."""
    printed = subprocess.run(
        [str(STACK), "paths"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    url = dict(line.split("=", 1) for line in printed.splitlines())["registry_url"]
    if _answers(url):
        return url
    started = subprocess.run(
        [str(STACK), "up", "registry"], capture_output=True, text=True, timeout=1200
    )
    if started.returncode != 0 or not _answers(url):
        raise RuntimeError(
            "the stack's schema registry could not be started; `deploy/local/stack up registry` "
            f"said:\n{started.stderr[-3000:]}"
        )
    return url


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/subjects", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass(frozen=True)
class Registered:
    schema_id: int  # the ccompat id (Apicurio's content id)
    global_id: int  # Apicurio's id of this artifact version


class RegistryProducer:
    """Registers writer schemas as an OMS team's pipeline would, and frames records with them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.native = url.rpartition("/apis/ccompat/")[0] + "/apis/registry/v2"

    async def register(self, subject: str, schema_file: Path) -> Registered:
        text = json.dumps(json.loads(schema_file.read_text(encoding="utf-8")))
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{self.url}/subjects/{subject}/versions", json={"schema": text}
            )
            response.raise_for_status()
            schema_id = int(response.json()["id"])
            meta = await client.get(f"{self.native}/groups/default/artifacts/{subject}/meta")
            meta.raise_for_status()
            return Registered(schema_id, int(meta.json()["globalId"]))


def avro_body(schema_file: Path, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(json.loads(schema_file.read_text())), record)
    return buffer.getvalue()


def confluent(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def apicurio_8_byte(global_id: int, body: bytes) -> bytes:
    return b"\x00" + global_id.to_bytes(8, "big") + body


def apicurio_headers(global_id: int) -> Headers:
    """What Apicurio's serdes write with headers on: the id in a header, the bare body."""
    return [
        ("apicurio.value.globalId", global_id.to_bytes(8, "big")),
        ("apicurio.value.encoding", b"BINARY"),
    ]


def as_json(event: OrderStatusChanged) -> dict[str, Any]:
    """The record as an OMS publishes JSON: camelCase, the time as epoch milliseconds."""
    data: dict[str, Any] = json.loads(event.model_dump_json(by_alias=True))
    data["occurredAt"] = int(event.occurred_at.timestamp() * 1000)
    return data


def cloudevent(event: OrderStatusChanged, *, structured: bool) -> tuple[bytes, Headers]:
    """A CloudEvent made by the `cloudevents` SDK's Kafka binding, in either content mode."""
    ce = CloudEvent(
        attributes={
            "type": ORDER_STATUS_TYPE,
            "source": "/oms/test",
            "id": event.event_id,
            "datacontenttype": "application/json",
            "subject": event.order_id,
        },
        data=as_json(event),
    )
    message = (to_structured if structured else to_binary)(ce, JSONFormat())
    return message.value, list(message.headers.items())


async def produce_framed(
    settings: Settings, topic: str, items: list[tuple[str, bytes, Headers]]
) -> None:
    """(key, value, headers) records, each acknowledged by Kafka."""
    producer: AIOKafkaProducer[bytes, bytes] = AIOKafkaProducer(
        **client_options(settings), enable_idempotence=True
    )
    await producer.start()
    try:
        for key, value, headers in items:
            await producer.send_and_wait(topic, key=key.encode(), value=value, headers=headers)
    finally:
        await producer.stop()


class TcpGate:
    """A TCP forwarder on loopback to a real server, closed (nothing listens) or open at will:
    the server's outage as a client sees it, without stopping the shared server."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(
            self._forward, "127.0.0.1", self.port, reuse_address=True
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._pipes):
            task.cancel()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


class BasicAuthProxy:
    """HTTPS with basic auth in front of the real registry, as a reverse proxy (nginx's
    auth_basic, an API gateway) runs it: a request without the right credentials is answered
    401, any other is forwarded and the registry's answer returned. A thread of its own."""

    def __init__(self, upstream: str, cert: Path, key: Path, user: str, password: str) -> None:
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        origin = upstream.rpartition("/apis/")[0]
        self.seen: list[str | None] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                seen.append(self.headers.get("Authorization"))
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="registry"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                response = httpx.request(
                    self.command, origin + self.path, content=body, timeout=30,
                    headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                )  # fmt: skip
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("content-type", ""))
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_POST = do_PUT = _forward  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                """Quiet: the test reads `seen`."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}/apis/ccompat/v7"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> BasicAuthProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
