"""No message stalls the relay (issue 19): hostile inputs are bounded work, off the event loop, and
sessions are capped per client IP and in total. Against the real relay, dnsmasq, Kafka, FerretDB.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiosmtplib
import pytest

from tests.conftest import Capture
from tests.integration.test_relay import CUSTOMER, FORGER, GENUINE, STORE, Relay, _mail
from tests.integration.test_relay import relay as relay  # noqa: PLC0414 - the fixture, shared
from tests.integration.test_relay import sender_dns as sender_dns  # noqa: PLC0414
from tests.integration.test_relay_auth import _relay_with
from tests.support.dns import LoopbackDns
from tests.support.hostile import (
    SessionTimes,
    dsn,
    hostile_dkim_message,
    hostile_dsn,
    hostile_key_names,
    hostile_key_record,
    send_report_timed,
    send_timed,
    served_during,
    timed_session,
)
from worker.domain.replies import TOO_MANY_SESSIONS

pytestmark = pytest.mark.stack


async def test_a_second_session_is_answered_while_a_hostile_dsn_and_dkim_key_are_processed(
    relay: Relay, capture: Capture, dns_server: LoopbackDns, unique: Any
) -> None:
    hostile_domain = unique("hostile") + ".example"
    for name in hostile_key_names(hostile_domain):
        dns_server.publish_txt(name, hostile_key_record())
    dns_server.apply()
    customer_alias = relay.order.customer_alias
    # A forward of ours, whose VERP return path the hostile DSN is sent to.
    first = _mail(STORE, customer_alias, "Before")
    assert (await relay.send(first, sender=STORE, to=customer_alias))[0] == 250
    [entry] = capture.messages()
    verp = entry["mailFrom"]

    async def session(k: int, what: str = "busy") -> SessionTimes:
        message = _mail(STORE, customer_alias, f"{what} {k}")
        times = await timed_session(
            relay.port, message, sender=STORE, to=customer_alias, source=GENUINE
        )
        assert times.code == 250
        return times

    idle = [await session(i, "idle") for i in range(3)]
    dkim_message = hostile_dkim_message(hostile_domain, customer_alias)
    dkim = send_timed(
        relay.port, dkim_message, sender=f"sales@{hostile_domain}", to=customer_alias, source=FORGER
    )
    hostile = send_report_timed(relay.port, verp, hostile_dsn(verp, CUSTOMER), FORGER)
    [(dsn_reply, dsn_s), (dkim_reply, dkim_s)], busy = await served_during([hostile, dkim], session)
    print(
        f"\nidle: greeting {max(t.greeting_s for t in idle) * 1000:.0f} ms, message "
        f"{max(t.message_s for t in idle) * 1000:.0f} ms | during the hostile DSN "
        f"({dsn_s * 1000:.0f} ms, {dsn_reply[0]}) and DKIM key ({dkim_s * 1000:.0f} ms, "
        f"{dkim_reply[0]}): {len(busy)} sessions, greeting max "
        f"{max(t.greeting_s for t in busy) * 1000:.0f} ms, message max "
        f"{max(t.message_s for t in busy) * 1000:.0f} ms"
    )
    assert dsn_reply[0] == 250  # a report, read and recorded
    assert dkim_reply[0] == 250  # a stranger's mail: the keys are permerror, nothing proven
    assert dkim_s < 2.0  # three oversized keys refused before any arithmetic
    [forward] = [m for m in capture.messages() if m["headers"].get("Subject") == "hostile key"]
    verdicts = capture.raw(forward).split(b"\r\n\r\n", 1)[0].decode()
    assert verdicts.count("dkim=permerror") == 3, verdicts
    assert max(t.greeting_s for t in busy) < 0.5 and max(t.message_s for t in busy) < 2.0


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
    assert await _report(relay, verp, dsn(verp, "someone@example.org")) == (
        250, "2.0.0 Report received",
    )  # fmt: skip
    assert await db["suppressions"].count_documents({}) == 0
    # The same report again, reworded: the same entry (once per return path and status).
    again = dsn(verp, "someone@example.org").replace(b"no such user", b"gone")
    assert (await _report(relay, verp, again))[0] == 250
    # The genuine one names the address the forward went to: now it suppresses.
    assert (await _report(relay, verp, dsn(verp, CUSTOMER)))[0] == 250
    assert await db["suppressions"].count_documents({}) == 1
    replies = [(await _report(relay, verp, dsn(verp, CUSTOMER, "4.2.2")))[0] for _ in range(3)]
    assert replies == [250, 250, 451]  # five reports per return path an hour
