"""SMTP for the tests: a plaintext pool to a local server, and a capture server that refuses on
demand (the fault mode production's `ct sink` does not have).

`FaultyCapture` is the capture handler plus a reply it answers to every message while set:
`refuse("451 4.3.0 ...")` in process, or, for a sink run as a process (tests/faults), a file
`<dir>/FAULT` whose first line is that reply (`python -m tests.support.smtp --dir D --port P`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from worker.adapters.smtp import SmtpPool
from worker.adapters.smtp_server import bound_port, start_smtp_server
from worker.core.config import Settings
from worker.core.logging import configure_logging
from worker.devtools.sink import CaptureHandler

FAULT_FILE = "FAULT"


def plain_pool(port: int, *, size: int, timeout: float, host: str = "127.0.0.1") -> SmtpPool:
    """A pool to a plaintext server on loopback with no AUTH (the capture server)."""
    settings = Settings(smtp_host=host, smtp_port=port, smtp_pool_size=size, smtp_timeout_s=timeout)
    return SmtpPool(settings)


class FaultyCapture(CaptureHandler):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.refusal: str | None = None
        self.refused = 0  # messages answered with a refusal: proof that a sender tried

    def refuse(self, reply: str) -> None:
        self.refusal = reply

    def accept(self) -> None:
        self.refusal = None
        (self.directory / FAULT_FILE).unlink(missing_ok=True)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        fault = self.refusal or self._fault_file()
        if fault:
            self.refused += 1
            return fault
        return await super().handle_DATA(server, session, envelope)

    def _fault_file(self) -> str | None:
        try:
            text = (self.directory / FAULT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        line = text.splitlines()[0] if text else ""
        return line if line[:1] in {"4", "5"} else "451 4.3.0 Capture server paused"


async def _serve(host: str, port: int, directory: Path) -> None:
    handler = FaultyCapture(directory)
    server = await start_smtp_server(
        handler, host, port, hostname="ct-test-sink", data_size_limit=100 * 1024 * 1024
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    print(f"test sink on {host}:{bound_port(server)}, {directory}", flush=True)
    try:
        await stopping.wait()
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
        handler.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    configure_logging("info", "json", "ct.example.com")
    asyncio.run(_serve(args.host, args.port, args.dir))


if __name__ == "__main__":
    main()
