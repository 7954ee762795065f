"""Faults injected into a running pipeline, each one noted with its time for the report."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.faults.conftest import PrivateStack
from tests.faults.procs import Worker

SMTP_REFUSAL = "451 4.3.0 Fault test: upstream refusing for a while"


@dataclass
class Chaos:
    stack: PrivateStack
    workers: dict[str, Worker]
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    notes: list[dict[str, Any]] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=dict)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    # Called with each note: how far the pipeline got when the fault struck.
    progress: Callable[[], dict[str, Any]] | None = None
    _busy: set[str] = field(default_factory=set)

    def note(self, what: str, **detail: Any) -> None:
        entry = {"at_s": round(time.monotonic() - self.started, 1), "what": what, **detail}
        if self.progress is not None:
            entry |= self.progress()
        self.notes.append(entry)
        print(f"  chaos {entry}", flush=True)

    async def kill(self, kind: str) -> None:
        """SIGKILL at a random moment of the current work, then restart like an orchestrator."""
        worker = self.workers[kind]
        self._busy.add(kind)
        try:
            self.note("sigkill", worker=kind, pid=worker.pid)
            await worker.kill()
            self.kills[kind] = self.kills.get(kind, 0) + 1
            await asyncio.sleep(self.rng.uniform(0.2, 2.0))
            await self._restart(worker)
        finally:
            self._busy.discard(kind)

    async def restart_kafka(self) -> None:
        self.note("kafka restart begins")
        await self.stack.arun("restart", "kafka")
        self.note("kafka restarted")

    async def kill_broker(self, node: int, *, down_s: float) -> None:
        """SIGKILL one Kafka broker of a cluster (no controlled shutdown: its partitions lose
        their leader at once), then start it again after `down_s`."""
        pid = self.stack.broker_pid(node)
        self.note("broker sigkill", broker=node, pid=pid)
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(down_s)
        await self.stack.arun("up", f"kafka-{node}")
        self.note("broker restarted", broker=node)

    async def stop_broker(self, node: int) -> None:
        """A graceful stop (SIGTERM: controlled shutdown moves its leaders away first)."""
        self.note("broker stop begins", broker=node)
        await self.stack.arun("down", f"kafka-{node}")
        self.note("broker stopped", broker=node)

    async def ferretdb_outage(self, seconds: float) -> None:
        self.note("ferretdb down")
        await self.stack.arun("down", "ferretdb")
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.stack.arun("up", "ferretdb")
            self.note("ferretdb up")

    async def smtp_refusal(self, seconds: float) -> None:
        fault = self.stack.sink_dir / "FAULT"
        fault.write_text(SMTP_REFUSAL + "\n", encoding="utf-8")
        self.note("smtp refusing 451")
        try:
            await asyncio.sleep(seconds)
        finally:
            fault.unlink(missing_ok=True)
            self.note("smtp accepting")

    async def _restart(self, worker: Worker, within: float = 120.0) -> None:
        """Start again until ready: a start can fail while a dependency is still coming back."""
        deadline = time.monotonic() + within
        while True:
            try:
                took = await worker.restart(ready_timeout=max(deadline - time.monotonic(), 1))
            except AssertionError as exc:
                worker.cleanup()
                if time.monotonic() >= deadline:
                    raise
                self.note("restart failed, retrying", worker=worker.kind, error=str(exc)[:300])
                await asyncio.sleep(2)
                continue
            self.note("ready", worker=worker.kind, pid=worker.pid, after_s=round(took, 1))
            return

    async def supervise(self) -> None:
        """Restart a worker that exited on its own, and keep the evidence: that is a crash."""
        while True:
            # A copy: scaling adds and removes replicas while a restart is awaited here.
            for kind, worker in list(self.workers.items()):
                if kind not in self.workers:
                    continue
                if kind in self._busy or worker.running:
                    continue
                code = worker.reap()
                self.crashes.append({"worker": kind, "exit": code, "log": str(worker.logs[-1])})
                self.note("unexpected exit", worker=kind, exit=code, tail=worker.tail(5))
                self._busy.add(kind)
                try:
                    await self._restart(worker)
                finally:
                    self._busy.discard(kind)
            await asyncio.sleep(0.5)

    async def run_plan(
        self, plan: list[Callable[[], Awaitable[None]]], *, emails: tuple[int, int]
    ) -> None:
        """Each step strikes at a random moment once the pipeline moves again after the last one
        (a restarted consumer waits out the dead member's session first): a fault that hits an
        idle pipeline tests nothing."""
        for step in plan:
            await self._flowing(self.rng.randint(*emails), within=90)
            await asyncio.sleep(self.rng.uniform(0, 2))
            await step()

    async def _flowing(self, emails: int, within: float) -> None:
        if self.progress is None:
            return
        start = self.progress()["emailed"]
        deadline = time.monotonic() + within
        while self.progress()["emailed"] < start + emails:
            if time.monotonic() > deadline:
                self.note("pipeline did not move: striking anyway", wanted=emails)
                return
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def supervised(chaos: Chaos) -> AsyncIterator[Chaos]:
    task = asyncio.create_task(chaos.supervise())
    try:
        yield chaos
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
