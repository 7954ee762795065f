"""Timeline events written in the registry's framing, and `ct schemas`, against the real
Apicurio Registry of the stack."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tests.conftest import REPO, Capture
from tests.helpers import CODEC, produce, read_topic, running, settings_env
from tests.support.bus import BasicAuthProxy
from tests.support.events import order_event, timeline_event
from tests.support.polling import eventually
from worker.adapters import mongo
from worker.adapters.event_wire import EventWire
from worker.apps.notifier import NotifierService
from worker.apps.projector import ProjectorService
from worker.contracts.events import OrderStatus, TimelineEvent
from worker.core.config import Settings
from worker.core.crypto import AddressCipher
from worker.services.outbound import MailKeys
from worker.services.timeline import get_timeline

pytestmark = pytest.mark.stack
INCOMPATIBLE = REPO / "tests" / "fixtures" / "schemas" / "incompatible"


async def test_confluent_framing_writes_the_registry_id_and_the_projector_reads_it(
    topics: Settings,
    with_capture: Settings,
    capture: Capture,
    registry_url: str,
    db: mongo.Database,
) -> None:
    """CT_SCHEMA_FRAMING=confluent: the notifier registers timeline_event.avsc under
    `<timeline topic>-value`, frames every timeline record `00` + that id, and the projector
    reads them back through the registry into the order's timeline."""
    settings = with_capture.model_copy(
        update={"schema_registry_url": registry_url, "schema_framing": "confluent"}
    )
    event = order_event("o-cf", OrderStatus.SHIPPED)
    await produce(settings, settings.topic_order_status, [(event.order_id, CODEC.encode(event))])
    notifier = NotifierService(
        settings, EventWire(settings), AddressCipher(settings.data_keys()), MailKeys.load(settings)
    )
    async with running(notifier, ProjectorService(settings, EventWire(settings))):
        entries = await eventually(
            lambda: _entries(db, "o-cf", 2),
            timeout=90,
            what="STATUS_CHANGED and NOTIFICATION_SENT",
        )
    assert {e.kind.value for e in entries} == {"STATUS_CHANGED", "NOTIFICATION_SENT"}
    latest = httpx.get(
        f"{registry_url}/subjects/{settings.topic_timeline}-value/versions/latest", timeout=10
    ).json()
    records = await read_topic(settings, settings.topic_timeline, want=2)
    for record in records:
        assert record.value[:5] == b"\x00" + int(latest["id"]).to_bytes(4, "big")


async def test_replicas_starting_together_all_get_the_timeline_schemas_id(
    settings: Settings, registry_url: str
) -> None:
    """Four workers register a new subject at once (Apicurio answers the losers of that race
    409 "already exists"): every one starts, with the same id. Five rounds, new subjects."""
    for round_ in range(5):
        s = settings.model_copy(
            update={
                "schema_registry_url": registry_url,
                "schema_framing": "confluent",
                "topic_timeline": f"{settings.topic_timeline}-{round_}",
            }
        )
        wires = [EventWire(s) for _ in range(4)]
        try:
            await asyncio.gather(*(wire.start() for wire in wires))
            event = timeline_event("o-1")
            assert len({wire.encode(event)[:5] for wire in wires}) == 1
        finally:
            await asyncio.gather(*(wire.aclose() for wire in wires))


async def _entries(db: mongo.Database, order_id: str, want: int) -> list[TimelineEvent] | None:
    entries = await get_timeline(db, order_id) or []
    return entries if len(entries) >= want else None


def _ct(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "schemas", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_ct_schemas_registers_checks_and_refuses_an_incompatible_change(
    settings: Settings, registry_url: str
) -> None:
    """register: both subjects, BACKWARD; check: compatible; an orderId turned into a long:
    not compatible, with the registry's reason, exit 1."""
    settings = settings.model_copy(update={"schema_registry_url": registry_url})
    before = _ct(settings, "check")
    assert before.returncode == 0, before.stderr
    assert before.stdout.count("not registered yet") == 2
    registered = _ct(settings, "register")
    assert registered.returncode == 0, registered.stderr
    for subject in (settings.topic_order_status, settings.topic_timeline):
        assert f"{subject}-value: " in registered.stdout
        config = httpx.get(f"{registry_url}/config/{subject}-value", timeout=10).json()
        assert config["compatibilityLevel"] == "BACKWARD"
    checked = _ct(settings, "check")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count("is compatible (BACKWARD)") == 2
    refused = _ct(settings, "check", "--schemas", str(INCOMPATIBLE))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{settings.topic_order_status}-value: order_status.avsc is NOT compatible" in (
        refused.stdout
    )
    assert "orderId" in refused.stdout or "LONG" in refused.stdout.upper()


def test_the_registry_over_tls_is_trusted_through_its_ca_file_and_refused_without_it(
    settings: Settings, registry_url: str
) -> None:
    """The stack's registry also serves HTTPS with the stack's certificate: CT_SCHEMA_REGISTRY_
    CA_FILE makes it trusted; without it, one line naming that setting, exit 2."""
    paths = _stack_paths()
    tls = settings.model_copy(update={"schema_registry_url": paths["registry_tls_url"]})
    refused = _ct(tls, "check")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "ct schemas check: the schema registry's certificate is not trusted "
        f"({paths['registry_tls_url']}): set CT_SCHEMA_REGISTRY_CA_FILE to the CA that signed it"
    ]
    trusted = tls.model_copy(update={"schema_registry_ca_file": Path(paths["secure"]) / "ca.pem"})
    checked = _ct(trusted, "check")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count("not registered yet") == 2


def test_basic_auth_is_sent_over_tls_and_a_wrong_password_names_the_settings(
    settings: Settings, registry_url: str
) -> None:
    """The registry behind a reverse proxy demanding basic auth (the stack's registry has no
    authentication of its own): every request carries the credentials; a wrong password is
    one line naming the settings, exit 2, and shows no password."""
    secure = Path(_stack_paths()["secure"])
    password = "s3cret-registry-pw"
    with BasicAuthProxy(
        registry_url, secure / "server.pem", secure / "server.key", "ct", password
    ) as proxy:
        secured = settings.model_copy(
            update={
                "schema_registry_url": proxy.url,
                "schema_registry_ca_file": secure / "ca.pem",
                "schema_registry_username": "ct",
                "schema_registry_password": SecretStr(password),
            }
        )
        accepted = _ct(secured, "register")
        assert accepted.returncode == 0, accepted.stderr
        assert accepted.stdout.count("compatibility BACKWARD") == 2
        assert len(proxy.seen) == 4 and len(set(proxy.seen)) == 1 and proxy.seen[0]
        wrong = secured.model_copy(update={"schema_registry_password": SecretStr("wrong-pw")})
        refused = _ct(wrong, "check")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "ct schemas check: the schema registry refused these credentials (401): check "
        "CT_SCHEMA_REGISTRY_USERNAME and CT_SCHEMA_REGISTRY_PASSWORD"
    ]
    assert "wrong-pw" not in refused.stdout + refused.stderr


def _stack_paths() -> dict[str, str]:
    printed = subprocess.run(
        [str(REPO / "deploy" / "local" / "stack"), "paths"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in printed.splitlines())


def test_ct_schemas_names_the_setting_when_no_registry_answers(settings: Settings) -> None:
    closed = settings.model_copy(
        update={"schema_registry_url": "http://127.0.0.1:9/apis/ccompat/v7"}
    )
    result = _ct(closed, "check")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "ct schemas check: no schema registry answers at "
        "CT_SCHEMA_REGISTRY_URL=http://127.0.0.1:9/apis/ccompat/v7 "
        "(http://127.0.0.1:9/apis/ccompat/v7: ConnectError)"
    ]
