"""The SMTP upstream over STARTTLS + AUTH and implicit TLS (real Mailpit instances), the whole
pipeline on the stack's secure listeners, and what a refused SMTP password, an untrusted
certificate or a missing STARTTLS do: no DELIVERY_FAILED, nothing committed past the unsent
email, not ready, one line naming the fix, and every email sent exactly once after the fix."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from tests.conftest import Capture, SecureStack
from tests.helpers import CODEC, produce, running, settings_env
from tests.support.events import order_event
from tests.support.kafka import committed
from tests.support.mailpit import Mailpit, PrivateMailpit
from tests.support.net import free_port
from tests.support.polling import eventually
from tests.support.processes import CT, assert_no_secret, ct, untrusted_ca
from worker.adapters import mongo
from worker.adapters.alias_store import AliasStore
from worker.adapters.dialect import detect_dialect
from worker.adapters.kafka import ensure_topics
from worker.adapters.smtp import SmtpPool
from worker.apps.notifier import NotifierService
from worker.apps.projector import ProjectorService
from worker.apps.relay import RelayService
from worker.contracts.events import OrderStatus, OrderStatusChanged
from worker.core.config import Rejected, Settings, load_settings
from worker.core.crypto import AddressCipher
from worker.domain.aliases import Party, SystemClock
from worker.services.timeline import get_timeline

pytestmark = pytest.mark.stack
WRONG_PASSWORD = "not-the-smtp-password-0000"
MESSAGE = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: %s\r\n\r\nHello\r\n"


def _notifier(settings: Settings) -> NotifierService:
    return NotifierService(settings, CODEC, AddressCipher(settings.data_keys()))


def _with(settings: Settings, **updates: Any) -> Settings:
    """Settings validated again, as a process reading them from its environment would."""
    return load_settings(**{**settings.model_dump(), **updates})


async def _emit(settings: Settings, *events: OrderStatusChanged) -> None:
    await produce(
        settings, settings.topic_order_status, [(e.order_id, CODEC.encode(e)) for e in events]
    )


async def _sent(mailpit: Mailpit, order_id: str) -> list[dict[str, Any]]:
    return await mailpit.search(order_id)


async def _ledger(db: mongo.Database) -> dict[str, bool]:
    """Every outcome the ledger holds: an email's, kept with its message; the others'."""
    emails = db["messages"].find({"outcome": {"$ne": None}}, {"outcome": 1})
    found = {doc["_id"]: doc["outcome"]["sent"] async for doc in emails}
    return found | {doc["_id"]: doc["sent"] async for doc in db["deliveries"].find({})}


async def test_notifier_relay_and_projector_run_on_the_secure_stack(
    secure_settings: Settings, secure_stack: SecureStack, db: mongo.Database, unique: Any
) -> None:
    """Events over SASL_SSL, emails through Mailpit over STARTTLS + AUTH (read back through its
    API), a store's message forwarded by the relay the same way, timelines written over TLS."""
    s = secure_settings.model_copy(update={"relay_port": 0})
    assert s.smtp_tls == "starttls" and s.smtp_username == "ct"
    await ensure_topics(s, s.topic_partitions, 1)
    mailpit = Mailpit(secure_stack["CT_STACK_MAILPIT_API"])
    order = unique("o-secure")
    await _emit(s, order_event(order, OrderStatus.SHIPPED, customer_email="jane.sec@example.org"))
    relay = RelayService(s, CODEC, AddressCipher(s.data_keys()))
    async with running(_notifier(s), relay, ProjectorService(s, CODEC)):
        [email] = await eventually(lambda: _sent(mailpit, order), what="the SHIPPED email")
        full = await mailpit.message(email["ID"])
        assert full["Username"] == "ct"  # it authenticated
        assert [b["Address"] for b in full["Bcc"]] == ["jane.sec@example.org"]
        customer_alias = full["To"][0]["Address"]
        subject = f"About {order}, from the store"
        assert relay.port is not None
        await aiosmtplib.send(
            MESSAGE % subject.encode(), hostname="127.0.0.1", port=relay.port,
            sender="orders@shop.example.com", recipients=[customer_alias], start_tls=False,
        )  # fmt: skip
        [forwarded] = await eventually(lambda: mailpit.search(subject), what="the forward")
        assert (await mailpit.message(forwarded["ID"]))["Username"] == "ct"

        async def kinds() -> list[str]:
            entries = await get_timeline(db, order) or []
            return [e.kind.value for e in entries]

        want = {"STATUS_CHANGED", "NOTIFICATION_SENT", "MESSAGE_FORWARDED"}
        await eventually(lambda: _has(kinds(), want), what="the timeline over TLS")


async def _has(found: Any, want: set[str]) -> bool:
    return want <= set(await found)


async def test_implicit_tls_sends_through_mailpits_tls_mode_on_reused_connections(
    secure_settings: Settings, secure_stack: SecureStack, unique: Any
) -> None:
    host, port = secure_stack["CT_STACK_MAILPIT_TLS_SMTP"].split(":")
    s = _with(secure_settings, smtp_tls="tls", smtp_host=host, smtp_port=int(port))
    pool = SmtpPool.from_settings(_with(s, smtp_pool_size=1))
    subject = unique("implicit-tls")
    try:
        await pool.check()
        for n in range(3):
            await pool.send(
                MESSAGE % f"{subject} {n}".encode(), sender="a@example.com",
                recipients=["b@example.org"],
            )  # fmt: skip
    finally:
        await pool.close()
    received = await Mailpit(secure_stack["CT_STACK_MAILPIT_TLS_API"]).search(subject)
    assert sorted(m["Subject"] for m in received) == [f"{subject} {n}" for n in range(3)]
    assert {m["Username"] for m in received} == {"ct"}


async def test_starttls_is_refused_when_the_server_does_not_offer_it(
    secure_settings: Settings, capture: Capture
) -> None:
    """The test's capture server speaks no STARTTLS: nothing is sent in plaintext instead."""
    s = _with(secure_settings, smtp_host="127.0.0.1", smtp_port=capture.port)
    pool = SmtpPool.from_settings(s)
    try:
        with pytest.raises(Rejected, match="does not offer STARTTLS") as refused:
            await pool.send(MESSAGE % b"never", sender="a@example.com", recipients=["b@x.org"])
    finally:
        await pool.close()
    assert "CT_SMTP_TLS=starttls" in str(refused.value)
    assert capture.messages() == []
    checked = await ct(settings_env(s), "check", "smtp")
    assert checked.code == 2 and "does not offer STARTTLS" in checked.stderr


def _wrong_password(tmp: Path) -> dict[str, str]:
    return {"CT_SMTP_PASSWORD": WRONG_PASSWORD}


def _untrusted_ca(tmp: Path) -> dict[str, str]:
    return {"CT_SMTP_CA_FILE": str(untrusted_ca(tmp))}


@pytest.mark.parametrize(
    "case",
    [(_wrong_password, "CT_SMTP_PASSWORD"), (_untrusted_ca, "CT_SMTP_CA_FILE")],
    ids=["wrong-smtp-password", "untrusted-smtp-ca"],
)
async def test_a_refused_smtp_setting_stops_the_notifier_and_the_fix_sends_each_email_once(
    secure_settings: Settings,
    secure_stack: SecureStack,
    db: mongo.Database,
    tmp_path: Path,
    case: tuple[Any, str],
) -> None:
    """The case: what breaks the SMTP settings, and the variable the one line must name."""
    breakage, names = case
    s = secure_settings
    await ensure_topics(s, s.topic_partitions, 1)
    orders = [f"o-smtp-{i}-{s.mongo_db}" for i in range(3)]
    await _emit(s, *(order_event(o, customer_email=f"{o}@example.org") for o in orders))
    mailpit = Mailpit(secure_stack["CT_STACK_MAILPIT_API"])

    failed = await ct(settings_env(s, **breakage(tmp_path)), "run", "notifier")
    assert failed.code == 2 and failed.seconds < 30, failed.stderr[-2000:]
    [line] = failed.errors()
    assert line["event"] == "service_failed" and names in line["fix"], line
    assert_no_secret([*secure_stack.secrets(), WRONG_PASSWORD], failed.stderr, failed.stdout)
    assert await _ledger(db) == {}  # no DELIVERY_FAILED, nothing recorded at all
    assert await committed(s, s.topic_order_status, s.group_notifier) == 0

    http_port = free_port()
    env = settings_env(s, CT_HTTP_PORT=str(http_port))
    process = await asyncio.create_subprocess_exec(
        CT, "run", "notifier", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await eventually(lambda: _all_sent(mailpit, orders), timeout=60, what="3 emails")
        metrics = await _http_get(http_port, "/metrics")
        assert "ct_emails_sent_total 3.0" in metrics
        assert_no_secret(secure_stack.secrets(), metrics)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert_no_secret(secure_stack.secrets(), stderr.decode())
    for order in orders:
        assert len(await _sent(mailpit, order)) == 1
    assert sorted((await _ledger(db)).values()) == [True, True, True]


async def _all_sent(mailpit: Mailpit, orders: list[str]) -> bool:
    return all([await _sent(mailpit, order) for order in orders])


async def _http_get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data.decode()


async def test_a_password_refused_mid_run_records_nothing_and_commits_nothing_past_it(
    secure_settings: Settings, secure_stack: SecureStack, db: mongo.Database, tmp_path: Path,
    unique: Any,
) -> None:  # fmt: skip
    """The upstream changes its password while the notifier runs (a private Mailpit,
    restarted): the next email is refused with 535. The notifier stops with Rejected and is
    not ready; the earlier email stays the only one recorded and committed; with the new
    password the refused one is sent, once."""
    mailpit = PrivateMailpit(
        secure_stack.path("mailpit_bin"), Path(secure_stack.path("secure")), tmp_path
    )
    await mailpit.start("first-password")
    s = _with(
        secure_settings, smtp_port=mailpit.smtp_port, smtp_password="first-password",
        shutdown_grace_s=5,
    )  # fmt: skip
    await ensure_topics(s, s.topic_partitions, 1)
    first, second = unique("o-before"), unique("o-after")
    try:
        service = _notifier(s)
        stopping = asyncio.Event()
        task = asyncio.create_task(service.run(stopping))
        await eventually(service.is_ready, what="the notifier ready")
        await _emit(s, order_event(first))
        await eventually(lambda: _sent(mailpit.api, first), what="the first email")
        await eventually(lambda: _committed_one(s), what="the first offset committed")

        mailpit.stop()
        await mailpit.start("second-password")
        await _emit(s, order_event(second))
        with pytest.raises(Rejected, match="CT_SMTP_PASSWORD") as refused:
            await asyncio.wait_for(task, 30)
        assert "535" in str(refused.value) and "second-password" not in str(refused.value)
        assert not service.is_ready()
        assert list((await _ledger(db)).values()) == [True]
        assert await committed(s, s.topic_order_status, s.group_notifier) == 1
        assert await _sent(mailpit.api, second) == []

        fixed = _with(s, smtp_password="second-password")
        async with running(_notifier(fixed)):
            await eventually(lambda: _sent(mailpit.api, second), what="the refused email, sent")
        assert len(await _sent(mailpit.api, first)) == 1
        assert len(await _sent(mailpit.api, second)) == 1
        assert sorted((await _ledger(db)).values()) == [True, True]  # no DELIVERY_FAILED
    finally:
        mailpit.stop()


async def _committed_one(s: Settings) -> bool:
    return await committed(s, s.topic_order_status, s.group_notifier) == 1


async def test_the_relay_answers_451_and_stops_when_the_upstream_refuses_its_password(
    secure_settings: Settings, secure_stack: SecureStack, db: mongo.Database, tmp_path: Path
) -> None:
    """The sender is told to retry (its mail is not lost), and the relay leaves with the fix."""
    mailpit = PrivateMailpit(
        secure_stack.path("mailpit_bin"), Path(secure_stack.path("secure")), tmp_path
    )
    await mailpit.start("first-password")
    s = _with(
        secure_settings, smtp_port=mailpit.smtp_port, smtp_password="first-password"
    ).model_copy(update={"relay_port": 0})  # 0: a port of the kernel's choosing
    await ensure_topics(s, s.topic_partitions, 1)
    await mongo.ensure_indexes(db)
    aliases = AliasStore(
        db, AddressCipher(s.data_keys()), domain=s.domain, ttl_days=60, clock=SystemClock(),
        dialect=await detect_dialect(db),
    )  # fmt: skip
    customer, _ = await aliases.order_pair(
        f"o-relay-{s.mongo_db}", "store-1", Party("jane.relay@example.org", "Jane"),
        Party("orders@shop.example.com", "Shop"),
    )  # fmt: skip
    relay = RelayService(s, CODEC, AddressCipher(s.data_keys()))
    task = asyncio.create_task(relay.run(asyncio.Event()))
    try:
        await eventually(relay.is_ready, what="the relay ready")
        assert relay.port is not None
        mailpit.stop()
        await mailpit.start("second-password")
        with pytest.raises(aiosmtplib.SMTPResponseException) as answered:
            await aiosmtplib.send(
                MESSAGE % b"to the customer", hostname="127.0.0.1", port=relay.port,
                sender="orders@shop.example.com", recipients=[customer.address], start_tls=False,
            )  # fmt: skip
        assert answered.value.code == 451
        with pytest.raises(Rejected, match="CT_SMTP_PASSWORD"):
            await asyncio.wait_for(task, 30)
        assert not relay.is_ready()
    finally:
        task.cancel()
        mailpit.stop()
