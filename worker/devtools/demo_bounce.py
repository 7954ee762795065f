"""The demo's bounce: a customer whose mailbox does not exist, as their provider reports it.

The demo's SMTP sink accepts everything, so the demo plays the customer's mail provider itself:
it answers the captured notification with the delivery status notification (RFC 3464) a real
MTA sends after accepting a message for a mailbox that turns out not to exist, to the envelope
sender the notification carried (its VERP return path), through the relay, null sender. The
relay records the bounce on the order's timeline and the notifier sends that order nothing more.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime

BOUNCED_CUSTOMER = ("Lucas", "Lima", "lucas.lima@no-such-mailbox.example")
PROVIDER = "mx.no-such-mailbox.example"


def delivery_status_notification(notification: bytes, recipient: str, return_path: str) -> bytes:
    """The DSN `PROVIDER` sends `return_path` for `notification`: user unknown, 5.1.1."""
    boundary = f"dsn-{secrets.token_hex(8)}"
    now = format_datetime(datetime.now(UTC))
    headers = BytesHeaderParser(policy=compat32).parsebytes(notification)
    original = "".join(f"{name}: {value}\r\n" for name, value in headers.items()
                       if not name.lower().startswith("dkim-"))  # fmt: skip
    diagnostic = f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{PROVIDER}>",
        f"To: {return_path}",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {now}",
        f"Message-ID: <{secrets.token_hex(12)}@{PROVIDER}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This is the mail system at host {PROVIDER}.",
        "Your message could not be delivered to one or more recipients.",
        "",
        f"<{recipient}>: {diagnostic}",
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {PROVIDER}",
        f"Arrival-Date: {now}",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        "Action: failed",
        "Status: 5.1.1",
        f"Diagnostic-Code: smtp; {diagnostic}",
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
        original.rstrip("\r\n"),
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")
