"""The relay as a real `ct run relay` process, SIGKILLed while clients keep sending to it."""

from __future__ import annotations

import asyncio
import json
import signal
import smtplib
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr

import pytest

from tests.faults.conftest import Pipeline
from tests.faults.evidence import SinkTail, customer_address, emit, order_events, store_address
from tests.faults.procs import WorkerPool
from worker.domain.compose import message_id_for

pytestmark = [pytest.mark.stack, pytest.mark.slow]
SENDERS = 4


@dataclass
class Senders:
    """Threads sending one message per SMTP session, like many independent mail servers."""

    port: int
    mail_from: str
    rcpt_to: str
    stop: threading.Event = field(default_factory=threading.Event)
    accepted: list[tuple[float, str]] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _message(self, n: int) -> tuple[str, EmailMessage]:
        message_id = f"<kill-{uuid.uuid4().hex}@sender.example.net>"
        message = EmailMessage()
        message["From"] = f"Seller <{self.mail_from}>"
        message["To"] = self.rcpt_to
        message["Subject"] = f"About your order, note {n}"
        message["Message-ID"] = message_id
        message.set_content(f"Hello, this is note {n}.\n")
        return message_id, message

    def _loop(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            message_id, message = self._message(n)
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as smtp:
                    refused = smtp.send_message(message, self.mail_from, [self.rcpt_to])
                if refused:
                    raise smtplib.SMTPRecipientsRefused(refused)
            except (smtplib.SMTPException, OSError) as exc:
                with self._lock:
                    self.failures[type(exc).__name__] += 1
                time.sleep(0.1)  # the relay is down: do not spin on connection refused
                continue
            with self._lock:  # DATA answered 250: the relay vouches for this message now
                self.accepted.append((time.monotonic(), message_id))

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(SENDERS)]
        for thread in threads:
            thread.start()
        return threads


async def test_a_relay_killed_mid_session_never_loses_a_message_it_answered_250_for(
    pipeline: Pipeline, workers: WorkerPool
) -> None:
    """Store mail to the customer alias from 4 concurrent senders; the relay is SIGKILLed once and
    restarted. Every message the relay answered 250 for must be in the upstream (the sink)."""
    run = pipeline.run_id
    (event,) = order_events(run, orders=1, per_order=1)
    sink = SinkTail.from_now(pipeline.stack.sink_dir)
    await emit(pipeline.settings, [event])
    (notifier,) = await workers.started("notifier")
    notification = message_id_for(event.event_id, pipeline.settings.domain)
    async with asyncio.timeout(60):
        while not sink.poll().get(notification):
            await asyncio.sleep(0.3)
    customer_alias = _recipient_alias(pipeline, notification)

    (relay,) = await workers.started("relay")
    senders = Senders(relay.relay_port, store_address(run, 0), customer_alias)
    threads = senders.start()
    try:
        await asyncio.sleep(4)
        killed_at = time.monotonic()
        relay.signal(signal.SIGKILL)
        await relay.wait_exit(10)
        await asyncio.sleep(1)
        await relay.restart()
        await asyncio.sleep(5)
    finally:
        senders.stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)

    before = [m for at, m in senders.accepted if at < killed_at]
    after = [m for at, m in senders.accepted if at >= killed_at]
    failures = dict(senders.failures)
    print(f"\nrelay kill: {len(before)} answered 250 before, {len(after)} after; {failures}")
    assert before and after, "the senders must have been answered on both sides of the kill"
    deadline = time.monotonic() + 30
    while missing := {m for _, m in senders.accepted} - set(sink.poll()):
        assert time.monotonic() < deadline, f"{len(missing)} messages answered 250 are lost"
        await asyncio.sleep(0.5)
    leaked = customer_address(run, 0)
    assert all(leaked not in path.read_text() for path in workers.log_files())
    assert notifier.running


def _recipient_alias(pipeline: Pipeline, message_id: str) -> str:
    """The customer alias, read off the notification's To header as the sink recorded it."""
    for line in (pipeline.stack.sink_dir / "index.jsonl").read_text().splitlines()[::-1]:
        if message_id in line:
            return parseaddr(json.loads(line)["headers"]["To"])[1]
    raise AssertionError("the notification is not in the sink")
