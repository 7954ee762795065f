"""`ct sink`: an SMTP capture server. Accepts every message and files it for tests and people.

Each message becomes `<dir>/<n>.eml` plus one JSON line in `<dir>/index.jsonl` (envelope, headers,
size). The tests' capture server that can also refuse is tests/support/smtp.py's FaultyCapture.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from worker.adapters.smtp_server import bound_port, start_smtp_server

log = structlog.get_logger(__name__)
ACCEPTED = "250 2.0.0 Message captured"
INDEXED_HEADERS = ("From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "In-Reply-To", "Date")


class CaptureHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._index_lock = threading.Lock()
        self._index = (directory / "index.jsonl").open("a", encoding="utf-8")
        self._prefix = f"{int(time.time() * 1000)}"
        self._counter = itertools.count(1)
        self.accepted = 0

    def close(self) -> None:
        self._index.close()

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        name = f"{self._prefix}-{next(self._counter):07d}.eml"
        content = envelope.content or b""  # bytes: the server runs with decode_data=False
        raw = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
        await asyncio.to_thread(
            self._store, name, envelope.mail_from or "", list(envelope.rcpt_tos), raw
        )
        self.accepted += 1
        return ACCEPTED

    def _store(self, name: str, mail_from: str, rcpt_tos: list[str], content: bytes) -> None:
        (self.directory / name).write_bytes(content)
        headers = BytesHeaderParser(policy=SMTP_POLICY).parsebytes(content)
        entry = {
            "file": name,
            "receivedAt": datetime.now(UTC).isoformat(),
            "mailFrom": mail_from,
            "rcptTos": rcpt_tos,
            "size": len(content),
            "headers": {h: str(headers[h]) for h in INDEXED_HEADERS if headers[h] is not None},
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._index_lock:
            self._index.write(line)
            self._index.flush()


def read_index(directory: Path) -> list[dict[str, Any]]:
    """Every captured message's index entry, oldest first."""
    path = directory / "index.jsonl"
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


async def serve_sink(host: str, port: int, directory: Path, stopping: asyncio.Event) -> None:
    handler = CaptureHandler(directory)
    server = await start_smtp_server(
        handler, host, port, hostname="ct-sink", data_size_limit=100 * 1024 * 1024
    )
    log.info("sink_listening", host=host, port=bound_port(server), directory=str(directory))
    try:
        await stopping.wait()
    finally:
        server.close()
        await server.wait_closed()
        handler.close()
        log.info("sink_stopped", accepted=handler.accepted)
