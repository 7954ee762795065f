"""No message stalls the relay (issue 19): hostile inputs are bounded work, off the event loop, and
sessions are capped per client IP and in total. Against the real relay, dnsmasq, Kafka, FerretDB.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from typing import Any

import aiosmtplib
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import Capture
from tests.integration.test_relay import CUSTOMER, FORGER, GENUINE, STORE, Relay, _mail
from tests.integration.test_relay import relay as relay  # noqa: PLC0414 - the fixture, shared
from tests.integration.test_relay import sender_dns as sender_dns  # noqa: PLC0414
from tests.integration.test_relay_auth import _relay_with
from tests.support.dns import LoopbackDns
from worker.domain.replies import TOO_MANY_SESSIONS

pytestmark = pytest.mark.stack
MB = 1024 * 1024


def _hostile_key_record() -> str:
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


def _hostile_dkim_message(domain: str, to: str) -> bytes:
    encoded = base64.b64encode(secrets.token_bytes(550)).decode("ascii")
    signature = "\r\n\t".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    body_hash = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    fields = "".join(
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=big{i};\r\n"
        f"\th=from:to:subject; bh={body_hash};\r\n\tb={signature}\r\n"
        for i in range(3)
    )
    return (
        f"{fields}From: Sales <sales@{domain}>\r\nTo: {to}\r\nSubject: hostile key\r\n\r\nhi\r\n"
    ).encode()


def _hostile_dsn(to: str) -> bytes:
    folded = "\r\n ".join("a" * 900 for _ in range(MB // 900))
    return (
        f"From: MAILER-DAEMON@mx.example.org\r\nTo: {to}\r\nSubject: Undelivered\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {CUSTOMER}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 {folded}\r\n--b--\r\n"
    ).encode()


async def _timed_session(relay: Relay, subject: str) -> tuple[float, float]:
    """(seconds to the greeting and EHLO, seconds for a whole store-to-customer message)."""
    started = time.perf_counter()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False)
    await client.connect(source_address=(GENUINE, 0))
    await client.ehlo()
    greeted = time.perf_counter() - started
    await client.quit()
    started = time.perf_counter()
    code, _ = await relay.send(
        _mail(STORE, relay.order.customer_alias, subject), sender=STORE,
        to=relay.order.customer_alias,
    )  # fmt: skip
    assert code == 250
    return greeted, time.perf_counter() - started


async def test_a_second_session_is_answered_while_a_hostile_dsn_and_dkim_key_are_processed(
    relay: Relay, capture: Capture, dns_server: LoopbackDns, unique: Any
) -> None:
    hostile = unique("hostile") + ".example"
    for i in range(3):
        dns_server.publish_txt(f"big{i}._domainkey.{hostile}", _hostile_key_record())
    dns_server.apply()
    # A forward of ours, whose VERP return path the hostile DSN is sent to.
    first = _mail(STORE, relay.order.customer_alias, "Before")
    assert (await relay.send(first, sender=STORE, to=relay.order.customer_alias))[0] == 250
    [entry] = capture.messages()
    verp = entry["mailFrom"]
    idle = [await _timed_session(relay, f"idle {i}") for i in range(3)]

    async def hostile_dsn() -> tuple[tuple[int, str], float]:
        started = time.perf_counter()
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False)
        await client.connect(source_address=(FORGER, 0))
        try:
            await client.ehlo()
            await client.mail("")  # a bounce's null reverse path
            await client.rcpt(verp)
            answer = await client.data(_hostile_dsn(verp))
        finally:
            await client.quit()
        return (answer.code, answer.message), time.perf_counter() - started

    async def hostile_dkim() -> tuple[tuple[int, str], float]:
        started = time.perf_counter()
        raw = _hostile_dkim_message(hostile, relay.order.customer_alias)
        reply = await relay.send(
            raw, sender=f"sales@{hostile}", to=relay.order.customer_alias, source=FORGER
        )
        return reply, time.perf_counter() - started

    dsn_task = asyncio.create_task(hostile_dsn())
    dkim_task = asyncio.create_task(hostile_dkim())
    busy: list[tuple[float, float]] = []
    while not (dsn_task.done() and dkim_task.done()) or not busy:
        busy.append(await _timed_session(relay, f"busy {len(busy)}"))
    (dsn_reply, dsn_s), (dkim_reply, dkim_s) = await dsn_task, await dkim_task
    print(
        f"\nidle: greeting {max(g for g, _ in idle) * 1000:.0f} ms, message "
        f"{max(m for _, m in idle) * 1000:.0f} ms | during the hostile DSN "
        f"({dsn_s * 1000:.0f} ms, {dsn_reply[0]}) and DKIM key ({dkim_s * 1000:.0f} ms, "
        f"{dkim_reply[0]}): {len(busy)} sessions, greeting max {max(g for g, _ in busy) * 1000:.0f}"
        f" ms, message max {max(m for _, m in busy) * 1000:.0f} ms"
    )
    assert dsn_reply[0] == 250  # a report, read and recorded
    assert dkim_reply[0] == 250  # a stranger's mail: the keys are permerror, nothing proven
    assert dkim_s < 2.0  # three oversized keys refused before any arithmetic
    [forward] = [m for m in capture.messages() if m["headers"].get("Subject") == "hostile key"]
    verdicts = capture.raw(forward).split(b"\r\n\r\n", 1)[0].decode()
    assert verdicts.count("dkim=permerror") == 3, verdicts
    assert max(g for g, _ in busy) < 0.5 and max(m for _, m in busy) < 2.0


async def test_sessions_beyond_the_caps_get_421_and_others_are_served(relay: Relay) -> None:
    async with _relay_with(relay, relay_max_sessions=3, relay_max_sessions_per_ip=2) as capped:
        open_clients = []

        async def connect(source: str) -> aiosmtplib.SMTP:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=capped.port, start_tls=False)
            await client.connect(source_address=(source, 0))
            open_clients.append(client)
            return client

        try:
            await connect(GENUINE)
            await connect(GENUINE)
            with pytest.raises(aiosmtplib.SMTPConnectResponseError) as per_ip:
                await connect(GENUINE)
            third = await connect("127.0.0.2")
            assert (await third.noop()).code == 250
            with pytest.raises(aiosmtplib.SMTPConnectResponseError) as total:
                await connect(FORGER)
            await open_clients[0].quit()
            await asyncio.sleep(0.1)
            again = await connect(FORGER)
            assert (await again.ehlo()).code == 250
        finally:
            for client in open_clients:
                if client.is_connected:
                    await client.quit()
    for refused in (per_ip.value, total.value):
        assert (refused.code, refused.message) == (421, TOO_MANY_SESSIONS[4:])


def _dsn(to: str, final_recipient: str, status: str = "5.1.1") -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.example.org\r\nTo: {to}\r\nSubject: Undelivered\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {final_recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} no such user\r\n--b--\r\n"
    ).encode()


async def _report(relay: Relay, verp: str, raw: bytes) -> tuple[int, str]:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False)
    await client.connect(source_address=(FORGER, 0))
    try:
        await client.ehlo()
        await client.mail("")
        await client.rcpt(verp)
        try:
            answer = await client.data(raw)
        except aiosmtplib.SMTPDataError as exc:
            return exc.code, exc.message
    finally:
        await client.quit()
    return answer.code, answer.message


async def test_forged_reports_suppress_nobody_and_a_flood_of_them_is_limited(
    relay: Relay, capture: Capture, db: Any
) -> None:
    to = relay.order.customer_alias
    assert (await relay.send(_mail(STORE, to, "Reported"), sender=STORE, to=to))[0] == 250
    [entry] = capture.messages()
    verp = entry["mailFrom"]
    # Whoever saw the return path forges a hard bounce naming some other address.
    assert await _report(relay, verp, _dsn(verp, "someone@example.org")) == (
        250, "2.0.0 Report received",
    )  # fmt: skip
    assert await db["suppressions"].count_documents({}) == 0
    # The same report again, reworded: the same entry (once per return path and status).
    again = _dsn(verp, "someone@example.org").replace(b"no such user", b"gone")
    assert (await _report(relay, verp, again))[0] == 250
    # The genuine one names the address the forward went to: now it suppresses.
    assert (await _report(relay, verp, _dsn(verp, CUSTOMER)))[0] == 250
    assert await db["suppressions"].count_documents({}) == 1
    replies = [(await _report(relay, verp, _dsn(verp, CUSTOMER, "4.2.2")))[0] for _ in range(3)]
    assert replies == [250, 250, 451]  # five reports per return path an hour
