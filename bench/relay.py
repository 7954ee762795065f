"""The relay stage: M store-to-customer messages through `ct run relay`, and its ceiling.

The ceiling is the capture server's own accept rate for the same messages with the same client
(a pool of reused aiosmtplib connections): the relay forwards into that very server.

It runs twice in one bench: as deployed, authenticating every sender (SPF, DKIM and DMARC
against a loopback dnsmasq that publishes the stores' records; each message DKIM-signed by the
client beforehand), and with `CT_RELAY_SENDER_AUTH=off`. The difference is what authentication
costs. The resolver's cache is warm after the first message of each store domain, as it is for
a production relay whose senders write again and again.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import aiosmtplib

from bench.ceilings import smtp_send
from bench.env import BenchEnv, BenchError, poll_until
from bench.kafka_io import TopicWatcher
from bench.stages import HOTSPOTS
from bench.workers import WorkerProcess, inclusive_share, top_frames
from tests.support.dns import LoopbackDns
from tests.support.net import free_port
from tests.support.senders import SenderDomain, publish_all
from worker.adapters import mongo
from worker.adapters.alias_store import AliasStore
from worker.adapters.dialect import detect_dialect
from worker.config import decode_key
from worker.crypto import AddressCipher
from worker.domain.aliases import Party, SystemClock

MESSAGES_PER_ORDER = 5
STORE_DOMAINS = 20
Mail = tuple[str, str, bytes]


def _mail(sender: str, to: str, k: int) -> bytes:
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = f"Shop Example <{sender}>"
    message["To"] = to
    message["Subject"] = f"About your order, note {k}"
    message["Message-ID"] = f"<bench-{k}@shop.example.com>"
    message.set_content("Hello Jane,\n\nYour parcel leaves our warehouse tomorrow morning.\n" * 8)
    return message.as_bytes()


async def _aliases(env: BenchEnv, db_name: str, orders: int, stage: str) -> list[tuple[str, str]]:
    """Each order's (store's real address, customer alias), created as the notifier would."""
    settings = env.names("relay").settings
    client = mongo.connect(settings, app_name="ct-bench")
    db = client[db_name]
    store = AliasStore(
        db,
        AddressCipher([decode_key(env.encryption_key)]),
        domain=settings.domain,
        ttl_days=settings.alias_ttl_days,
        clock=SystemClock(),
        dialect=await detect_dialect(db),
    )
    slots = asyncio.Semaphore(16)

    async def pair(i: int) -> tuple[str, str]:
        real_store = f"orders@shop{i % STORE_DOMAINS}.example.com"
        async with slots:
            customer_alias, _ = await store.order_pair(
                f"{env.run_id}-{stage}-{i:06d}",
                f"store-{i % STORE_DOMAINS}",
                Party(f"customer{i}@example.org", f"Jane{i} Roe"),
                Party(real_store, "Shop Example"),
            )
        return real_store, customer_alias.address

    try:
        await mongo.ensure_indexes(db)
        return list(await asyncio.gather(*(pair(i) for i in range(orders))))
    finally:
        await client.close()


async def _send_all(port: int, mails: list[Mail], pool: int) -> dict[str, int]:
    replies: dict[str, int] = {}
    queue = iter(mails)

    async def sender() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, start_tls=False)
        await client.connect()
        try:
            for mail_from, rcpt, raw in queue:
                try:
                    await client.sendmail(mail_from, [rcpt], raw)
                    code = "250"
                except aiosmtplib.SMTPResponseException as exc:
                    code = str(exc.code)
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    code = str(exc.recipients[0].code)
                replies[code] = replies.get(code, 0) + 1
        finally:
            await client.quit()

    await asyncio.gather(*(sender() for _ in range(pool)))
    return replies


def _store_domains(env: BenchEnv) -> tuple[LoopbackDns, dict[str, SenderDomain]]:
    """The stores' SPF (127.0.0.1), DKIM and DMARC (p=reject) records, served on loopback."""
    dns = LoopbackDns(env.workdir / "dns", ttl=3600)
    domains = {
        f"shop{i}.example.com": SenderDomain(
            f"shop{i}.example.com", "127.0.0.1", "v=DMARC1; p=reject"
        )
        for i in range(STORE_DOMAINS)
    }
    publish_all(dns, *domains.values())
    return dns, domains


async def relay(
    env: BenchEnv,
    m: int,
    *,
    pool: int,
    limit_s: float,
    profile: bool,
    authenticate: bool = True,
) -> dict[str, Any]:
    stage = "relay" if authenticate else "relaynoauth"
    names = await env.create(env.names(stage))
    orders = await _aliases(env, names.settings.mongo_db, max(1, m // MESSAGES_PER_ORDER), stage)
    dns, domains = _store_domains(env) if authenticate else (None, {})

    def signed(raw: bytes, sender: str) -> bytes:
        domain = domains.get(sender.rpartition("@")[2])
        return domain.sign(raw) if domain is not None else raw

    mails = [
        (real_store, alias, signed(_mail(real_store, alias, k), real_store))
        for k, (real_store, alias) in zip(range(m), itertools.cycle(orders), strict=False)
    ]
    ceiling = await smtp_send(env.smtp_port, m, pool, mails)
    port = free_port()
    worker_env = env.worker_env(names) | {
        "CT_RELAY_HOST": "127.0.0.1",
        "CT_RELAY_PORT": str(port),
        "CT_RELAY_SENDER_AUTH": "enforce" if authenticate else "off",
    }
    if dns is not None:
        worker_env["CT_DNS_RESOLVERS"] = dns.resolver
    worker = WorkerProcess("relay", worker_env, env.workdir / f"{stage}.log")
    watcher = TopicWatcher(names.settings, names.timeline_topic)
    try:
        await worker.ready("relay_listening")
        await watcher.start()
        sink_before = env.sink_count()
        prof = env.workdir / f"{stage}.pyspy.txt"
        profiled = profile and worker.start_profile(prof, 20)
        started, cpu0 = time.monotonic(), worker.cpu_seconds()
        replies = await _send_all(port, mails, pool)
        sent_s = time.monotonic() - started
        recorded = await watcher.wait_for(m, limit_s)
        await poll_until(lambda: env.sink_count() - sink_before >= m, limit_s)
        elapsed = time.monotonic() - started
        forwarded = env.sink_count() - sink_before
        rss = worker.memory_kb()
        cpu_share = (worker.cpu_seconds() - cpu0) / elapsed
    finally:
        await watcher.stop()
        await worker.stop()
        if dns is not None:
            dns.stop()
    if replies.get("250", 0) == 0:
        raise BenchError(f"the relay accepted nothing: replies {replies}\n{worker.tail()}")
    return {
        "mode": "subprocess `ct run relay`",
        "sender_auth": "enforce (SPF, DKIM, DMARC over loopback DNS)" if authenticate else "off",
        "messages": m,
        "orders": len(orders),
        "client_pool": pool,
        "replies": replies,
        "forwarded_at_sink": forwarded,
        "timeline_records": watcher.count,
        "timed_out": not recorded or forwarded < m,
        "seconds": round(elapsed, 2),
        "client_seconds": round(sent_s, 2),
        "rate": round(min(forwarded, watcher.count) / elapsed, 1),
        "rss_kb": rss,
        "worker_cpu_share": round(cpu_share, 2),
        "ceiling": ceiling,
        "profile": {
            "top_self": top_frames(prof),
            "inclusive": inclusive_share(prof, HOTSPOTS),
        }
        if profiled
        else {},
    }
