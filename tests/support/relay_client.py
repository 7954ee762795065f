"""Sending to the relay as an outside server would, with the RCPT reply as the outcome."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib


async def rcpt_code(message: EmailMessage, port: int, sender: str, to: str) -> int:
    """250 when the relay took the message; else the code it refused the recipient with."""
    try:
        await aiosmtplib.send(
            message, hostname="127.0.0.1", port=port, sender=sender, recipients=[to],
            start_tls=False,
        )  # fmt: skip
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return exc.recipients[0].code
    return 250
