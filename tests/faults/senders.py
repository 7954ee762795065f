"""The relay's SMTP clients in the fault tests: threads that keep sending, and what they heard."""

from __future__ import annotations

import json
import smtplib
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path

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

    def start(self, count: int = SENDERS) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(count)]
        for thread in threads:
            thread.start()
        return threads


def recipient_alias(sink_dir: Path, message_id: str) -> str:
    """The customer alias, read off the notification's To header as the sink recorded it."""
    for line in (sink_dir / "index.jsonl").read_text().splitlines()[::-1]:
        if message_id in line:
            return parseaddr(json.loads(line)["headers"]["To"])[1]
    raise AssertionError("the notification is not in the sink")
