"""The SMTP servers a bench stage sends into, and Postfix's load generator for the relay.

Two upstreams, each a process of the bench's own on its own port, each counting what it accepted:
- `capture`: `ct sink`, the stack's capture server (files every message: the fault tests read it);
- `smtp-sink`: Postfix's `smtp-sink`, which accepts and throws away, as fast as a real MTA takes
  mail. The targets are measured against it: our capture server (Python, one file per message)
  accepts an order of magnitude less, so ratios against it alone hide how far a worker is from
  what the machine can do.

`smtp-source` (Postfix's generator, written in C, one process per sender) loads the relay the way
independent mail servers would, so the relay's rate does not depend on the bench's own client.
Both come from Debian's `postfix` package (`make tools`); they run as plain processes, no daemon.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.processes import CT, BenchError, spawn, stop_process
from worker.apps import checks

POSTFIX_DIRS = (Path("/usr/sbin"), Path("/usr/bin"))
# smtp-sink -c rewrites one status line per event, "sess=N quit=N mesg=N", separated by \r.
_MESSAGES = re.compile(rb"mesg=(\d+)")


def postfix_tool(name: str) -> str:
    """The path of smtp-sink or smtp-source; BenchError says how to install it when missing."""
    found = shutil.which(name) or next(
        (str(d / name) for d in POSTFIX_DIRS if (d / name).exists()), None
    )
    if found is None:
        raise BenchError(f"{name} not found: `make tools` installs Debian's postfix package")
    return found


class Upstream(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def pid(self) -> int: ...

    def accepted(self) -> int:
        """Messages accepted since the upstream started."""
        ...

    def stop(self) -> None: ...


@dataclass
class CaptureSink:
    """`ct sink`: every message filed as .eml plus a line of index.jsonl (what it counts)."""

    port: int
    directory: Path
    proc: subprocess.Popen[bytes]
    name: str = "capture"

    @classmethod
    async def start(cls, port: int, directory: Path, log: Path) -> CaptureSink:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CT_")}
        command = [str(CT), "sink", "--host", "127.0.0.1", "--port", str(port)]
        proc = spawn([*command, "--dir", str(directory)], env | {"CT_LOG_FORMAT": "json"}, log)
        await checks.wait_until(lambda: checks.smtp_answers("127.0.0.1", port), 30)
        return cls(port, directory, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def accepted(self) -> int:
        index = self.directory / "index.jsonl"
        if not index.exists():
            return 0
        with index.open("rb") as lines:
            return sum(1 for _ in lines)

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class PostfixSink:
    """Postfix's `smtp-sink`: accepts every message and discards it; counts with -c."""

    port: int
    counters: Path
    proc: subprocess.Popen[bytes]
    name: str = "smtp-sink"

    @classmethod
    async def start(cls, port: int, counters: Path, backlog: int = 256) -> PostfixSink:
        command = [postfix_tool("smtp-sink"), "-c", "-4", "-a", "-m", "512"]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root
            command += ["-u", "nobody"]
        proc = spawn([*command, f"127.0.0.1:{port}", str(backlog)], dict(os.environ), counters)
        try:
            await checks.wait_until(lambda: checks.smtp_answers("127.0.0.1", port), 30)
        except TimeoutError as exc:
            stop_process(proc, 5)
            said = _tail(counters)
            raise BenchError(f"smtp-sink on port {port} did not answer ({exc}): {said}") from exc
        return cls(port, counters, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def accepted(self) -> int:
        # The last counter line holds the total: read only the file's tail.
        size = self.counters.stat().st_size if self.counters.exists() else 0
        with self.counters.open("rb") as out:
            out.seek(max(0, size - 256))
            found = _MESSAGES.findall(out.read())
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        stop_process(self.proc, 5)


def _tail(path: Path, chars: int = 500) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@dataclass
class SourceRun:
    """What a set of smtp-source processes sent: per process its exit status and stderr."""

    sessions: int
    messages: int
    seconds: float
    cpu_s: float
    failures: list[str] = field(default_factory=list)


async def smtp_source(
    port: int, senders: list[tuple[str, str, bytes]], per_sender: int, sessions: int
) -> SourceRun:
    """One smtp-source process per (envelope sender, recipient, message), all at once.

    Each sends `per_sender` copies of its message over `sessions` parallel connections that
    stay open (-d). smtp-source stops at the first reply that is not positive, so a process
    that exits non-zero says the server refused something.
    """
    tool = postfix_tool("smtp-source")
    work = Path(tempfile.mkdtemp(prefix="ct-bench-source-"))
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    started, cpu0 = time.monotonic(), _children_cpu_s()
    try:
        for k, (mail_from, rcpt, raw) in enumerate(senders):
            message = work / f"{k}.eml"
            # -F sends the file line by line, adding CRLF and dot-stuffing itself.
            message.write_bytes(raw.replace(b"\r\n", b"\n"))
            err = work / f"{k}.err"
            command = [tool, "-d", "-s", str(sessions), "-m", str(per_sender), "-F", str(message)]
            command += ["-f", mail_from, "-t", rcpt, "-M", "sender.example.net"]
            with err.open("wb") as errors:
                proc = subprocess.Popen(  # noqa: ASYNC220 - started here, waited below off-loop
                    [*command, f"127.0.0.1:{port}"],
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                )
            procs.append((proc, err))
        codes = await asyncio.gather(*(asyncio.to_thread(p.wait) for p, _ in procs))
        seconds = time.monotonic() - started
        cpu = _children_cpu_s() - cpu0
        failures = [
            f"exit {code}: {err.read_text(errors='replace')[-300:]}"
            for code, (_, err) in zip(codes, procs, strict=True)
            if code != 0
        ]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return SourceRun(sessions * len(senders), per_sender * len(senders), seconds, cpu, failures)


def _children_cpu_s() -> float:
    """CPU of the bench's reaped children so far (how smtp-source's own cost is read)."""
    times = os.times()
    return times.children_user + times.children_system
