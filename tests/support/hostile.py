"""Hostile messages for the relay and the sessions timed while it reads them (issue 19).

test_relay_bounded.py asserts with them that no message stalls the relay; the bench's
`relay_hostile` diagnostic (bench/hostile.py) prints the same measurement.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TypeVar

import aiosmtplib
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MB = 1024 * 1024
HOSTILE_SIGNATURES = 3
T = TypeVar("T")
Reply = tuple[int, str]


def hostile_key_record() -> str:
    """A 4400-bit modulus with an 800-bit exponent: pure-Python RSA would spend on each.

    The largest hostile key dnsmasq can publish (it reads config lines of about 1 KB); the
    8192-bit key with an exponent as large is `tests/unit/test_dkim_bounds.py`'s.
    """
    modulus = secrets.randbits(4400) | (1 << 4399) | 1
    exponent = secrets.randbits(800) | (1 << 799) | 1
    key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def hostile_key_names(domain: str) -> list[str]:
    """Where `hostile_dkim_message`'s signatures look for their keys (publish hostile ones)."""
    return [f"big{i}._domainkey.{domain}" for i in range(HOSTILE_SIGNATURES)]


def hostile_dkim_message(domain: str, to: str) -> bytes:
    """A stranger's message with HOSTILE_SIGNATURES signatures of `domain`, whose keys are at
    `hostile_key_names(domain)`; its subject is `hostile key`."""
    encoded = base64.b64encode(secrets.token_bytes(550)).decode("ascii")
    signature = "\r\n\t".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    body_hash = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    fields = "".join(
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=big{i};\r\n"
        f"\th=from:to:subject; bh={body_hash};\r\n\tb={signature}\r\n"
        for i in range(HOSTILE_SIGNATURES)
    )
    return (
        f"{fields}From: Sales <sales@{domain}>\r\nTo: {to}\r\nSubject: hostile key\r\n\r\nhi\r\n"
    ).encode()


def hostile_dsn(to: str, final_recipient: str) -> bytes:
    """A bounce to `to` whose Diagnostic-Code is 1 MB of address characters, folded legally."""
    folded = "\r\n ".join("a" * 900 for _ in range(MB // 900))
    return dsn(to, final_recipient, diagnostic=folded)


def dsn(to: str, final_recipient: str, status: str = "5.1.1", diagnostic: str = "") -> bytes:
    """A bounce to `to` about `final_recipient`: `550 <status> no such user` unless told."""
    diagnostic = diagnostic or f"{status} no such user"
    return (
        f"From: MAILER-DAEMON@mx.example.org\r\nTo: {to}\r\nSubject: Undelivered\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {final_recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {diagnostic}\r\n--b--\r\n"
    ).encode()


async def send_timed(
    port: int, message: EmailMessage | bytes, *, sender: str, to: str, source: str
) -> tuple[Reply, float]:
    """One SMTP session from client address `source`: the final reply and its seconds."""
    started = time.perf_counter()
    try:
        _, text = await aiosmtplib.send(
            message, hostname="127.0.0.1", port=port, sender=sender, recipients=[to],
            start_tls=False, source_address=(source, 0),
        )  # fmt: skip
        reply = (250, text)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        reply = (exc.recipients[0].code, exc.recipients[0].message)
    except aiosmtplib.SMTPResponseException as exc:
        reply = (exc.code, exc.message)
    return reply, time.perf_counter() - started


async def send_report_timed(
    port: int, return_path: str, raw: bytes, source: str
) -> tuple[Reply, float]:
    """A report (null reverse path) to `return_path`: the reply to DATA and its seconds."""
    started = time.perf_counter()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect(source_address=(source, 0))
    try:
        await client.ehlo()
        await client.mail("")
        await client.rcpt(return_path)
        try:
            answer = await client.data(raw)
            reply = (answer.code, answer.message)
        except aiosmtplib.SMTPResponseException as exc:
            reply = (exc.code, exc.message)
    finally:
        await client.quit()
    return reply, time.perf_counter() - started


@dataclass(frozen=True)
class SessionTimes:
    greeting_s: float  # connect to the end of EHLO
    message_s: float  # a whole message, in a session of its own
    code: int  # the reply to that message


async def timed_session(
    port: int, message: EmailMessage | bytes, *, sender: str, to: str, source: str
) -> SessionTimes:
    """What another client sees: how soon it is greeted, how long one message takes."""
    started = time.perf_counter()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect(source_address=(source, 0))
    await client.ehlo()
    greeted = time.perf_counter() - started
    await client.quit()
    (code, _), seconds = await send_timed(port, message, sender=sender, to=to, source=source)
    return SessionTimes(greeted, seconds, code)


async def served_during(
    hostile: Sequence[Awaitable[T]], session: Callable[[int], Awaitable[SessionTimes]]
) -> tuple[list[T], list[SessionTimes]]:
    """Run the hostile sends and, one after another until they are all answered (at least
    once), `session(k)`: their results and every session's times."""
    tasks = [asyncio.ensure_future(h) for h in hostile]
    served: list[SessionTimes] = []
    try:
        while not all(t.done() for t in tasks) or not served:
            served.append(await session(len(served)))
        return [await t for t in tasks], served
    finally:
        for task in tasks:
            task.cancel()
