"""The `relay_hostile` diagnostic: a 1 MB hostile DSN answered while other sessions are served.

`ct run relay` as deployed (sender authentication enforced against a loopback dnsmasq) into the
capture server: one store message first, whose VERP return path the hostile DSN (a
`Diagnostic-Code` of 1 MB of address characters, tests/support/hostile.py) is sent to, beside a
stranger's message with three DKIM signatures whose published keys are hostile (4400-bit
modulus, 800-bit exponent). Meanwhile a second client opens session after session, each timed to
its greeting (connect and EHLO) and then for a whole signed store-to-customer message, until both
hostile messages are answered. Idle sessions before give the baseline. No target: issue 19's
promise is that the other sessions do not wait for the hostile message.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.env import BenchEnv
from bench.processes import BenchError, poll_until
from bench.relay import order_aliases, store_domains, store_mail
from bench.upstreams import CaptureSink
from bench.workers import WorkerProcess
from tests.support.dns import LoopbackDns
from tests.support.hostile import (
    SessionTimes,
    hostile_dkim_message,
    hostile_dsn,
    hostile_key_names,
    hostile_key_record,
    send_report_timed,
    send_timed,
    served_during,
    timed_session,
)
from tests.support.net import free_port
from worker.devtools.sink import read_index

IDLE_SESSIONS = 3
SOURCE = "127.0.0.1"  # the stores' SPF records authorise it (bench/relay.py)
# The DSN's Final-Recipient: not the address the forward went to, so it suppresses nobody and the
# timed store messages keep reaching the customer; it is read and recorded all the same.
OTHER_RECIPIENT = "someone@example.org"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _worst(times: list[SessionTimes]) -> dict[str, Any]:
    return {
        "sessions": len(times),
        "greeting_max_ms": _ms(max(t.greeting_s for t in times)),
        "message_max_ms": _ms(max(t.message_s for t in times)),
        "replies": sorted({t.code for t in times}),
    }


async def hostile(env: BenchEnv, *, limit_s: float = 120.0) -> dict[str, Any]:
    """The hostile DSN's and DKIM message's answers and times, and the other sessions' worst
    greeting and message times while they were read (and before, idle)."""
    names = await env.create(env.names("relay_hostile", "capture"))
    capture = names.upstream
    if not isinstance(capture, CaptureSink):
        raise BenchError("relay_hostile needs the capture server: it reads the VERP it saw")
    [(store, customer_alias)] = await order_aliases(env, names.settings.mongo_db, 1)
    shop = store_domains()[store.rpartition("@")[2]]
    hostile_domain = f"hostile-{env.run_id}.example"
    port = free_port()
    dns = LoopbackDns(env.workdir / "dns-relay_hostile", ttl=3600)
    worker_env = env.worker_env(names) | {
        "CT_RELAY_HOST": "127.0.0.1",
        "CT_RELAY_PORT": str(port),
        "CT_RELAY_SENDER_AUTH": "enforce",
        "CT_DNS_RESOLVERS": dns.resolver,
    }
    worker = WorkerProcess("relay", worker_env, env.workdir / "relay_hostile.log")
    try:
        shop.publish(dns)
        for name in hostile_key_names(hostile_domain):
            dns.publish_txt(name, hostile_key_record())
        dns.apply()
        await worker.ready("relay_listening")

        async def session(k: int) -> SessionTimes:
            message = shop.sign(store_mail(store, customer_alias, k))
            return await timed_session(
                port, message, sender=store, to=customer_alias, source=SOURCE
            )

        # The capture server may hold earlier stages' messages: this step's is the next one.
        earlier = len(read_index(capture.directory))
        first = await session(0)
        captured = await poll_until(lambda: len(read_index(capture.directory)) > earlier, 30)
        if first.code != 250 or not captured:
            raise BenchError(f"the store's first message was not forwarded:\n{worker.tail()}")
        verp = str(read_index(capture.directory)[earlier]["mailFrom"])
        idle = [await session(k) for k in range(1, 1 + IDLE_SESSIONS)]
        report = hostile_dsn(verp, OTHER_RECIPIENT)
        dsn = send_report_timed(port, verp, report, SOURCE)
        dkim = send_timed(
            port, hostile_dkim_message(hostile_domain, customer_alias),
            sender=f"sales@{hostile_domain}", to=customer_alias, source=SOURCE,
        )  # fmt: skip
        async with asyncio.timeout(limit_s):
            [(dsn_reply, dsn_s), (dkim_reply, dkim_s)], busy = await served_during(
                [dsn, dkim], lambda k: session(100 + k)
            )
    finally:
        await worker.stop()
        dns.stop()
    return {
        "hostile_dsn": {"bytes": len(report), "reply": dsn_reply[0], "ms": _ms(dsn_s)},
        "hostile_dkim": {
            "signatures": len(hostile_key_names(hostile_domain)),
            "reply": dkim_reply[0],
            "ms": _ms(dkim_s),
        },
        "during": _worst(busy),
        "idle": _worst(idle),
    }
