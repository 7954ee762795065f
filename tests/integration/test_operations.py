"""Operator commands through the real `ct` CLI: unmasking audit, DLQ replay, key rotation."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from tests.conftest import REPO, Capture
from tests.helpers import CODEC, produce, read_topic, running
from tests.support.events import order_event
from tests.support.polling import eventually
from worker.adapters import mongo
from worker.adapters.alias_store import AliasStore
from worker.adapters.dialect import Dialect
from worker.apps.notifier import NotifierService
from worker.contracts.events import OrderStatus
from worker.core.config import Settings, decode_key
from worker.core.crypto import AddressCipher, generate_key
from worker.domain.aliases import Party, SystemClock
from worker.services.outbound import MailKeys

pytestmark = pytest.mark.stack
CT = str(REPO / ".venv/bin/ct")


async def ct(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "CT_MONGO_DB": settings.mongo_db,
        "CT_TOPIC_ORDER_STATUS": settings.topic_order_status,
        "CT_TOPIC_TIMELINE": settings.topic_timeline,
        "CT_TOPIC_DLQ": settings.topic_dlq,
        "CT_ENCRYPTION_KEY": _key_text(settings),
        "CT_LOG_FORMAT": "json",
        **env,
    }
    return await asyncio.to_thread(
        subprocess.run, [CT, *args], capture_output=True, text=True, env=environment, timeout=120
    )


def _key_text(settings: Settings) -> str:
    assert settings.encryption_key is not None
    return settings.encryption_key.get_secret_value()


def _aliases(
    db: mongo.Database, dialect: Dialect, settings: Settings, keys: list[bytes] | None = None
) -> AliasStore:
    cipher = AddressCipher(keys or settings.data_keys())
    return AliasStore(
        db, cipher, domain=settings.domain, ttl_days=60, clock=SystemClock(), dialect=dialect
    )


async def test_alias_resolve_tells_order_and_role_and_audits_every_unmasking(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    await mongo.ensure_indexes(db)
    customer, _ = await _aliases(db, dialect, settings).order_pair(
        "o-audit",
        "store-a",
        Party("jane.roe@example.org", "Jane"),
        Party("orders@shop.example.com", "Shop"),
    )
    masked = await ct(settings, "alias", "resolve", customer.address, "--reason", "ticket 812")
    assert masked.returncode == 0, masked.stderr
    assert "o-audit" in masked.stdout and "CUSTOMER" in masked.stdout
    assert "jane.roe@example.org" not in masked.stdout

    revealed = await ct(
        settings,
        "alias",
        "resolve",
        customer.address,
        "--reason",
        "legal hold",
        "--reveal",
        "--operator",
        "ana",
    )
    assert "jane.roe@example.org" in revealed.stdout
    audit = [d async for d in db["audit"].find({}, sort=[("at", 1)])]
    assert [(a["action"], a["reason"]) for a in audit] == [
        ("alias.resolve", "ticket 812"),
        ("alias.reveal", "legal hold"),
    ]
    assert audit[1]["operator"] == "ana" and audit[1]["orderId"] == "o-audit"

    missing = await ct(settings, "alias", "resolve", "nobody@ct.example.com", "--reason", "check")
    assert missing.returncode == 1
    no_reason = await ct(settings, "alias", "resolve", customer.address)
    assert (
        no_reason.returncode == 2
        and no_reason.stderr.count("\n") == 1
        and "--reason" in no_reason.stderr
    )


async def test_dlq_replay_sends_dead_letters_back_once_the_cause_is_fixed(
    topics: Settings, with_capture: Settings, capture: Capture
) -> None:
    """An event refused for a store's broken template is replayed once the template is fixed."""
    store_dir = capture.directory.parent / "templates" / "store-1" / "en"
    store_dir.mkdir(parents=True)
    (store_dir / "shipped.subject.txt").write_text("Order {{ order_id  shipped")  # broken
    settings = with_capture.model_copy(update={"templates_dir": store_dir.parent.parent})
    shipped = order_event("o-replay", OrderStatus.SHIPPED)
    await produce(settings, settings.topic_order_status, [("o-replay", CODEC.encode(shipped))])
    async with running(
        NotifierService(
            settings, CODEC, AddressCipher(settings.data_keys()), MailKeys.load(settings)
        )
    ):
        await read_topic(settings, settings.topic_dlq, want=1)
    listed = await ct(settings, "dlq", "list")
    assert "notifier" in listed.stdout and "cannot render" in listed.stdout, listed.stdout
    dry = await ct(settings, "dlq", "replay", "--dry-run")
    assert "would replay 1 record(s)" in dry.stdout

    (store_dir / "shipped.subject.txt").write_text("Order {{ order_id }} shipped")  # the fix
    group = f"replay-{settings.topic_dlq}"
    replayed = await ct(settings, "dlq", "replay", "--group", group)
    assert "replayed 1 record(s)" in replayed.stdout, replayed.stderr
    again = await ct(settings, "dlq", "replay", "--group", group)
    assert "replayed 0 record(s)" in again.stdout  # the group remembers what it replayed
    async with running(
        NotifierService(
            settings, CODEC, AddressCipher(settings.data_keys()), MailKeys.load(settings)
        )
    ):
        await eventually(lambda: len(capture.messages()) == 1, what="the replayed email")
    [entry] = capture.messages()
    assert entry["headers"]["Subject"] == "Order o-replay shipped"


async def test_key_rotation_reencrypts_and_reverse_aliases_are_still_reused(
    dialect: Dialect, settings: Settings, db: mongo.Database
) -> None:
    await mongo.ensure_indexes(db)
    old = settings.data_keys()
    carrier = Party("tracking@carrier.example.net", "Carrier")
    store = _aliases(db, dialect, settings, old)
    await store.order_pair(
        "o-rot", "s", Party("jane@example.org", None), Party("shop@example.com", None)
    )
    reverse = await store.reverse_alias("o-rot", carrier)

    new_key = generate_key()
    rotated_env = {"CT_ENCRYPTION_KEY": new_key, "CT_ENCRYPTION_OLD_KEYS": _key_text(settings)}
    result = await ct(settings, "keys", "reencrypt", **rotated_env)
    assert "3 aliases checked, 3 re-encrypted" in result.stdout, result.stderr
    new_only = _aliases(db, dialect, settings, [decode_key(new_key)])
    found = await new_only.lookup(reverse.address)
    assert found is not None and found.real_address == "tracking@carrier.example.net"
    assert (await new_only.reverse_alias("o-rot", carrier)).address == reverse.address
