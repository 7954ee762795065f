"""Reading what a Mailpit instance received, through its HTTP API (/api/v1)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.net import free_port


class Mailpit:
    def __init__(self, api: str) -> None:
        self.base = api.rstrip("/")

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"{self.base}{path}", timeout=10) as response:  # noqa: S310 - loopback http
            body: bytes = response.read()
            return body

    async def search(self, text: str) -> list[dict[str, Any]]:
        """Summaries of the messages whose subject or body holds `text` (newest first)."""
        query = urllib.parse.urlencode({"query": text, "limit": 500})
        found = json.loads(await asyncio.to_thread(self._get, f"/api/v1/search?{query}"))
        messages: list[dict[str, Any]] = found["messages"]
        return messages

    async def raw(self, message_id: str) -> bytes:
        return await asyncio.to_thread(self._get, f"/api/v1/message/{message_id}/raw")

    async def message(self, message_id: str) -> dict[str, Any]:
        """The full message: headers parsed, plus what the SMTP session said (ReturnPath...)."""
        found: dict[str, Any] = json.loads(
            await asyncio.to_thread(self._get, f"/api/v1/message/{message_id}")
        )
        return found


class PrivateMailpit:
    """A Mailpit of one test (the stack's binary and certificate, its own ports and password
    file), which the test can restart with another password while a worker runs."""

    def __init__(self, binary: str, secure_dir: Path, workdir: Path) -> None:
        self._binary = binary
        self._secure = secure_dir
        self._workdir = workdir
        self.smtp_port = free_port()
        self.api = Mailpit(f"http://127.0.0.1:{free_port()}")
        self._api_address = self.api.base.removeprefix("http://")
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self, password: str) -> None:
        """STARTTLS required, AUTH as user ct with this password (a plain htpasswd line)."""
        auth = self._workdir / "mailpit-auth"
        auth.write_text(f"ct:{password}\n")
        command = [
            self._binary, "--database", str(self._workdir / "mailpit.db"),
            "--smtp", f"127.0.0.1:{self.smtp_port}", "--listen", self._api_address,
            "--smtp-tls-cert", str(self._secure / "server.pem"),
            "--smtp-tls-key", str(self._secure / "server.key"), "--smtp-require-starttls",
            "--smtp-auth-file", str(auth), "--smtp-disable-rdns", "--disable-version-check",
        ]  # fmt: skip
        with (self._workdir / "mailpit.log").open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        ready = [
            self._binary,
            "readyz",
            "--listen",
            self._api_address,
            "--wait",
            "--timeout",
            "30s",
        ]
        await asyncio.to_thread(subprocess.run, ready, check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(30)
        self._process = None
