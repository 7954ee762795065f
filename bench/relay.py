"""The relay stage: M store-to-customer messages through `ct run relay`, and its ceiling.

The ceiling is the upstream's own accept rate for the same messages with the same client (a
pool of reused aiosmtplib connections, or Postfix's smtp-source): the relay forwards into that
very server, so each relayed message costs at least one ceiling message.

The target run authenticates every sender, as deployed (SPF, DKIM and DMARC against a loopback
dnsmasq that publishes the stores' records; each message DKIM-signed by the client beforehand);
a comparison run sends the same load with `CT_RELAY_SENDER_AUTH=off`, and the difference is what
authentication costs. The resolver's cache is warm after the first message of each store
domain, as it is for a production relay whose senders write again and again.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import aiosmtplib

from bench import db_ops
from bench.env import BenchEnv
from bench.kafka_io import TopicWatcher
from bench.processes import BenchError, poll_until
from bench.stages import HOTSPOTS
from bench.upstreams import smtp_source
from bench.workers import WorkerProcess, inclusive_share, top_frames
from tests.support.dns import LoopbackDns
from tests.support.net import free_port
from tests.support.senders import SenderDomain, publish_all
from worker.adapters import mongo
from worker.adapters.alias_store import AliasStore
from worker.adapters.dialect import detect_dialect
from worker.core.config import decode_key
from worker.core.crypto import AddressCipher
from worker.domain.aliases import Party, SystemClock

MESSAGES_PER_ORDER = 5
STORE_DOMAINS = 20
# smtp-source processes of a relay run: each one sends one order's message over its sessions.
SOURCES = 8
SOURCE_SESSIONS = 16  # two per smtp-source process
Mail = tuple[str, str, bytes]


def store_mail(sender: str, to: str, k: int) -> bytes:
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = f"Shop Example <{sender}>"
    message["To"] = to
    message["Subject"] = f"About your order, note {k}"
    message["Message-ID"] = f"<bench-{k}@shop.example.com>"
    message.set_content("Hello Jane,\n\nYour parcel leaves our warehouse tomorrow morning.\n" * 8)
    return message.as_bytes()


def sample_mails(domain: str, count: int = 2_000) -> list[Mail]:
    """Messages shaped like the relay stage's, to made-up aliases: the CPU-only pipeline's input."""
    pairs = [
        (f"orders@shop{k % STORE_DOMAINS}.example.com", f"{k + 1:032d}@{domain}")
        for k in range(count)
    ]
    return [(store, alias, store_mail(store, alias, k)) for k, (store, alias) in enumerate(pairs)]


async def order_aliases(env: BenchEnv, db_name: str, orders: int) -> list[tuple[str, str]]:
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
                f"{env.run_id}-r{i:06d}",
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


def store_domains() -> dict[str, SenderDomain]:
    """The stores, each with its SPF (127.0.0.1), DKIM key and DMARC (p=reject) records."""
    return {
        f"shop{i}.example.com": SenderDomain(
            f"shop{i}.example.com", "127.0.0.1", "v=DMARC1; p=reject"
        )
        for i in range(STORE_DOMAINS)
    }


async def relay(
    env: BenchEnv,
    m: int,
    *,
    pool: int,
    limit_s: float,
    profile: bool,
    upstream: str = "smtp-sink",
    load: str = "aiosmtplib",
    stage: str = "relay",
    authenticate: bool = True,
) -> dict[str, Any]:
    """M store-to-customer messages through `ct run relay` into `upstream`, sent by `load`:
    the bench's own pool of `pool` aiosmtplib sessions, or Postfix's smtp-source (SOURCES
    processes, one order each, `pool` sessions in all). Its ceiling: the same messages, the same
    client, straight into the upstream. `authenticate` false runs it with sender authentication
    off (the messages are signed all the same)."""
    names = await env.create(env.names(stage, upstream))
    orders = await order_aliases(env, names.settings.mongo_db, max(1, m // MESSAGES_PER_ORDER))
    domains = store_domains()

    def signed(raw: bytes, sender: str) -> bytes:
        return domains[sender.rpartition("@")[2]].sign(raw)

    mails = [
        (real_store, alias, signed(store_mail(real_store, alias, k), real_store))
        for k, (real_store, alias) in zip(range(m), itertools.cycle(orders), strict=False)
    ]
    target = names.upstream
    if load == "smtp-source":
        mails = mails[: min(SOURCES, len(orders))]
        per_sender = -(-m // len(mails))
        m = per_sender * len(mails)
    ceiling = await _load(load, target.port, mails, m, pool)
    port = free_port()
    dns = LoopbackDns(env.workdir / f"dns-{stage}", ttl=3600)
    worker_env = env.worker_env(names) | {
        "CT_RELAY_HOST": "127.0.0.1",
        "CT_RELAY_PORT": str(port),
        "CT_RELAY_SENDER_AUTH": "enforce" if authenticate else "off",
        "CT_DNS_RESOLVERS": dns.resolver,
    }
    worker = WorkerProcess("relay", worker_env, env.workdir / f"{stage}.log")
    watcher = TopicWatcher(names.settings, names.timeline_topic)
    try:
        publish_all(dns, *domains.values())
        await worker.ready("relay_listening")
        await watcher.start()
        upstream_before = target.accepted()
        prof = env.workdir / f"{stage}.pyspy.txt"
        profiled = profile and worker.start_profile(prof, 20)
        ops0 = await db_ops.snapshot(names.settings)
        started, cpu0 = time.monotonic(), worker.cpu_seconds()
        sent = await _load(load, port, mails, m, pool)
        sent_s = time.monotonic() - started
        recorded = await watcher.wait_for(m, limit_s)
        await poll_until(lambda: target.accepted() - upstream_before >= m, limit_s)
        elapsed = time.monotonic() - started
        forwarded = target.accepted() - upstream_before
        rss = worker.memory_kb()
        cpu = worker.cpu_seconds() - cpu0
        ops = db_ops.per_event(
            ops0,
            await db_ops.snapshot(names.settings),
            forwarded,
            "private" if env.stacks else "shared",
        )
    finally:
        await watcher.stop()
        await worker.stop()
        dns.stop()
    replies = sent.get("replies", {})
    if not forwarded:
        raise BenchError(f"the relay forwarded nothing: {sent}\n{worker.tail()}")
    return {
        "mode": "subprocess `ct run relay`",
        "sender_auth": "enforce (SPF, DKIM, DMARC over loopback DNS)" if authenticate else "off",
        "upstream": target.name,
        "load": load,
        "messages": m,
        "orders": len(orders),
        "client_sessions": pool,
        "replies": replies,
        "load_failures": sent.get("failures", []),
        "forwarded_at_upstream": forwarded,
        "timeline_records": watcher.count,
        "timed_out": not recorded or forwarded < m,
        "seconds": round(elapsed, 2),
        "client_seconds": round(sent_s, 2),
        "rate": round(min(forwarded, watcher.count) / elapsed, 1),
        "rss_kb": rss,
        "worker_cpu_s": round(cpu, 2),
        "worker_cpu_share": round(cpu / elapsed, 2),
        "load_cpu_s": sent.get("cpu_s"),
        "ceiling": ceiling,
        "db_ops": ops,
        "profile": {
            "top_self": top_frames(prof),
            "inclusive": inclusive_share(prof, HOTSPOTS),
        }
        if profiled
        else {},
    }


async def _load(load: str, port: int, mails: list[Mail], m: int, sessions: int) -> dict[str, Any]:
    """Send m messages to `port` with the bench's aiosmtplib pool or with smtp-source."""
    if load == "smtp-source":
        per_sender = m // len(mails)
        run = await smtp_source(port, mails, per_sender, max(1, sessions // len(mails)))
        return {
            "load": "smtp-source",
            "messages": run.messages,
            "sessions": run.sessions,
            "seconds": round(run.seconds, 3),
            "rate": round(run.messages / run.seconds),
            "cpu_s": round(run.cpu_s, 2),
            "failures": run.failures,
        }
    started = time.monotonic()
    replies = await _send_all(port, mails[:m], sessions)
    seconds = time.monotonic() - started
    return {
        "load": "aiosmtplib",
        "messages": m,
        "sessions": sessions,
        "seconds": round(seconds, 3),
        "rate": round(m / seconds),
        "replies": replies,
    }
