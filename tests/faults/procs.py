"""Worker processes of the fault tests: real `ct run ...` subprocesses in their own process groups.

Every process gets its own HTTP port (for /readyz) and its own JSON log file; a restart is a new
process with a new log file, so no log line is ever lost or interleaved by a kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO
from tests.support.net import free_port

CT = REPO / ".venv" / "bin" / "ct"


async def http_get(port: int, path: str, *, timeout: float = 3.0) -> tuple[int, str]:
    """(status, body) of one HTTP/1.0 GET on loopback; (0, error) when nothing answers."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
    parts = head.split(" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body


@dataclass
class Run:
    """One process of a worker slot: its log and its lifetime in wall-clock (epoch) seconds."""

    log: Path
    started: float
    ended: float | None = None
    # SIGKILLed, or exited on its own with an error: either way in-flight work was not drained.
    abrupt: bool = False


@dataclass
class Worker:
    """One `ct run KIND` slot: the current process plus the history of the ones before it."""

    kind: str
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    http_port: int = 0
    # Kept across restarts: SMTP clients of a relay come back to the same port.
    relay_port: int = field(default_factory=free_port)
    runs: list[Run] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)
    # Names this slot's log files apart from other slots of the same kind (replicas).
    slot: int = 1

    @property
    def logs(self) -> list[Path]:
        return [run.log for run in self.runs]

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.kind} is already running")
        self.http_port = free_port()
        log_path = self.log_dir / f"{self.kind}-{self.slot}-{len(self.logs) + 1}.log"
        self.runs.append(Run(log_path, time.time()))
        with log_path.open("ab") as log_file:
            # A new session: the process and anything it spawns form a group we can kill whole.
            self.process = subprocess.Popen(
                [str(CT), "run", self.kind],
                env={
                    **self.env,
                    "CT_HTTP_PORT": str(self.http_port),
                    "CT_RELAY_PORT": str(self.relay_port),
                    # `ct run all` serves the console too: never on the shared default port.
                    "CT_WEB_PORT": str(free_port()),
                },
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
                cwd=REPO,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.kind} was never started")
        return self.process.pid

    async def ready(self, timeout: float = 60.0) -> float:
        """Wait for /readyz to answer 200; returns the seconds taken. Fails if the process dies."""
        started = time.monotonic()
        last = ""
        while time.monotonic() - started < timeout:
            if not self.running:
                raise AssertionError(
                    f"{self.kind} exited ({self.returncode}) before it was ready: {self.tail()}"
                )
            status, body = await http_get(self.http_port, "/readyz", timeout=2)
            if status == 200:
                return time.monotonic() - started
            last = f"{status} {body.strip()}"
            await asyncio.sleep(0.2)
        raise AssertionError(f"{self.kind} not ready within {timeout}s (last /readyz: {last})")

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def reap(self) -> int | None:
        """Record the exit of a process that ended on its own; None while it still runs."""
        code = self.returncode
        if code is not None and self.runs and self.runs[-1].ended is None:
            self.exits.append(code)
            self.runs[-1].ended = time.time()
            self.runs[-1].abrupt = code != 0
        return code

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    async def wait_exit(self, timeout: float) -> int:
        """The exit status; raises TimeoutError if the process still runs after `timeout`."""
        assert self.process is not None
        async with asyncio.timeout(timeout):
            while (code := self.process.poll()) is None:
                await asyncio.sleep(0.05)
        self.exits.append(code)
        self.runs[-1].ended = time.time()
        return code

    async def kill(self) -> None:
        """SIGKILL the whole group: no drain, no commit, no flush — a crash."""
        self.runs[-1].abrupt = True
        self.signal(signal.SIGKILL)
        await self.wait_exit(10)

    async def restart(self, *, ready_timeout: float = 90.0) -> float:
        self.start()
        return await self.ready(ready_timeout)

    def cleanup(self) -> None:
        """Kill whatever still runs; used in `finally`, so it never raises."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    def tail(self, lines: int = 15) -> str:
        if not self.logs or not self.logs[-1].exists():
            return "(no log)"
        text = self.logs[-1].read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class WorkerPool:
    """Every worker a test started, so that the fixture kills all of them whatever happens."""

    env: dict[str, str]
    log_dir: Path
    workers: list[Worker] = field(default_factory=list)

    def new(self, kind: str) -> Worker:
        slot = 1 + sum(w.kind == kind for w in self.workers)
        worker = Worker(kind, dict(self.env), self.log_dir, slot=slot)
        self.workers.append(worker)
        return worker

    async def started(self, *kinds: str, timeout: float = 90.0) -> list[Worker]:
        """Start one worker per kind and wait until every one of them is ready."""
        workers = [self.new(kind) for kind in kinds]
        for worker in workers:
            worker.start()
        await asyncio.gather(*(w.ready(timeout) for w in workers))
        return workers

    def log_files(self) -> list[Path]:
        return [path for w in self.workers for path in w.logs if path.exists()]

    def cleanup(self) -> None:
        for worker in self.workers:
            worker.cleanup()
