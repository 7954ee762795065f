"""`ct run WORKER` as a subprocess: its readiness, its own RSS, its log lines, a py-spy profile.

A subprocess rather than the service in the bench's loop, so that the worker's RSS and CPU are
its own (not the bench's producers and consumers) and it runs exactly as deployed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.processes import CT, BenchError, cpu_seconds, poll_until, spawn

PY_SPY = CT.parent / "py-spy"


def _parse(line: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


class WorkerProcess:
    def __init__(self, worker: str, env: dict[str, str], log: Path) -> None:
        self.worker = worker
        self.log = log
        self.proc = spawn([str(CT), "run", worker], env, log)
        self._profiler: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self, event: str | None = None) -> Iterator[dict[str, Any]]:
        """The worker's JSON log lines, optionally only those of one event name."""
        with self.log.open(encoding="utf-8", errors="replace") as text:
            for line in text:
                entry = _parse(line)
                if entry is not None and (event is None or entry.get("event") == event):
                    yield entry

    def tail(self, chars: int = 1500) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]

    async def assigned(self, limit_s: float = 90) -> float:
        """Wait until the consumer owns its partitions; returns that moment as a Unix time."""
        return await self.ready("partitions_assigned", limit_s)

    async def ready(self, event: str, limit_s: float = 90) -> float:
        """Wait for the first log line named `event`; returns its timestamp as a Unix time."""
        seen: list[dict[str, Any]] = []

        def logged() -> bool:
            if self.proc.poll() is not None:
                raise BenchError(f"ct run {self.worker} exited early:\n{self.tail()}")
            seen.extend(itertools.islice(self.lines(event), 1))
            return bool(seen)

        if not await poll_until(logged, limit_s):
            raise BenchError(f"ct run {self.worker}: no {event} in {limit_s:.0f}s:\n{self.tail()}")
        return datetime.fromisoformat(seen[0]["timestamp"]).timestamp()

    def memory_kb(self) -> dict[str, int]:
        """VmRSS (now) and VmHWM (peak) from /proc/<pid>/status, in KiB."""
        wanted = {"VmRSS", "VmHWM"}
        found: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in wanted:
                found[key] = int(value.split()[0])
        return found

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def start_profile(self, out: Path, seconds: int) -> bool:
        """py-spy (if installed in the venv) samples the worker for `seconds`: collapsed stacks."""
        if not PY_SPY.exists() and shutil.which("py-spy") is None:
            return False
        exe = str(PY_SPY) if PY_SPY.exists() else "py-spy"
        self._profiler = subprocess.Popen(
            [
                *(exe, "record", "--pid", str(self.pid), "--duration", str(seconds)),
                *("--rate", "200", "--format", "raw", "--nonblocking", "--output", str(out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return True

    async def stop(self, limit_s: float = 30) -> int:
        if self._profiler is not None:
            await asyncio.to_thread(self._profiler.wait, 120)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, limit_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        return self.proc.returncode


def top_frames(collapsed: Path, limit: int = 12) -> list[tuple[str, float]]:
    """Self time per function from a py-spy raw (collapsed) profile, as shares of all samples."""
    if not collapsed.exists():
        return []
    self_time: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        self_time[leaf] = self_time.get(leaf, 0) + int(count)
        total += int(count)
    ranked = sorted(self_time.items(), key=lambda kv: -kv[1])[:limit]
    return [(name, round(count / max(total, 1), 3)) for name, count in ranked]


def inclusive_share(collapsed: Path, needles: dict[str, str]) -> dict[str, float]:
    """Share of samples whose stack passes through each needle (a substring of a frame)."""
    if not collapsed.exists():
        return {}
    hits = dict.fromkeys(needles, 0)
    total = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for label, needle in needles.items():
            if needle in stack:
                hits[label] += int(count)
    return {label: round(n / max(total, 1), 3) for label, n in hits.items()}


class WorkerGroup:
    """`replicas` processes of one worker in one consumer group: the scale-out rows."""

    def __init__(self, worker: str, env: dict[str, str], logs: Path, replicas: int) -> None:
        self.members = [
            WorkerProcess(worker, env, logs.with_name(f"{logs.stem}-{k}{logs.suffix}"))
            for k in range(replicas)
        ]

    async def balanced(self, partitions: int, limit_s: float = 120) -> float:
        """Wait until the members own every partition between them, each its own share; returns
        that moment (Unix time). Each rebalance logs every member's whole new assignment."""
        for member in self.members:
            await member.assigned(limit_s)

        def split() -> bool:
            latest = [list(m.lines("partitions_assigned"))[-1]["partitions"] for m in self.members]
            owned = [p for parts in latest for p in parts]
            return len(owned) == len(set(owned)) == partitions and all(latest)

        if not await poll_until(split, limit_s, 0.2):
            raise BenchError(f"{len(self.members)} members never split {partitions} partitions")
        return max(
            datetime.fromisoformat(
                list(m.lines("partitions_assigned"))[-1]["timestamp"]
            ).timestamp()
            for m in self.members
        )

    def lines(self, event: str) -> Iterator[dict[str, Any]]:
        for member in self.members:
            yield from member.lines(event)

    def cpu_seconds(self) -> float:
        return sum(member.cpu_seconds() for member in self.members)

    def rss_kb(self) -> list[int]:
        return [member.memory_kb().get("VmRSS", 0) for member in self.members]

    async def stop(self) -> None:
        for member in self.members:
            await member.stop()
