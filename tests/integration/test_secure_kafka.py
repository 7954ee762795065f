"""Kafka over SASL_SSL (SCRAM-SHA-512) and mutual TLS, MongoDB over TLS, on the stack's real
listeners; and what a worker or `ct` does when a password, a certificate or an ACL is wrong:
exit non-zero within seconds with one log line naming the fix, commit nothing, and process every
event exactly once after the fix."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SecureStack
from tests.helpers import CODEC, produce, read_topic, running, settings_env
from tests.support.events import timeline_event
from tests.support.kafka import committed
from tests.support.polling import eventually
from tests.support.processes import CT, assert_no_secret, ct, untrusted_ca
from worker.adapters import mongo
from worker.adapters.kafka import ensure_topics
from worker.apps.projector import ProjectorService
from worker.core.config import Rejected, Settings, load_settings

pytestmark = pytest.mark.stack
WRONG_PASSWORD = "not-the-password-0000"


async def entry_ids(db: mongo.Database) -> list[str]:
    return [e["eventId"] async for doc in db["orders"].find({}) for e in doc.get("timeline", [])]


async def test_the_projector_reads_over_sasl_ssl_and_writes_over_tls(
    secure_settings: Settings, db: mongo.Database
) -> None:
    """User ct creates its topics, produces and consumes over SASL_SSL; MongoDB is TLS."""
    s = secure_settings
    assert s.kafka_security_protocol == "SASL_SSL" and "tls=true" in s.mongo_uri_shown
    await ensure_topics(s, s.topic_partitions, 1)
    events = [timeline_event(f"o-sec-{i % 2}", minutes=i) for i in range(4)]
    await produce(s, s.topic_timeline, [(e.order_id, CODEC.encode(e)) for e in events])
    async with running(ProjectorService(s, CODEC)):
        await eventually(lambda: _count(db, 4), what="4 timeline entries")
    over_tls = mongo.connect(s, app_name="ct-tests")
    try:
        doc = await over_tls[s.mongo_db]["orders"].find_one({"_id": "o-sec-0"})
    finally:
        await over_tls.close()
    assert doc is not None and len(doc["timeline"]) == 2


async def _count(db: mongo.Database, want: int) -> bool:
    return len(await entry_ids(db)) == want


def _wrong_password(s: Settings, secure: SecureStack, tmp: Path) -> dict[str, str]:
    return {"CT_KAFKA_SASL_PASSWORD": WRONG_PASSWORD}


def _untrusted_kafka_ca(s: Settings, secure: SecureStack, tmp: Path) -> dict[str, str]:
    return {"CT_KAFKA_SSL_CA_FILE": str(untrusted_ca(tmp))}


def _untrusted_mongo_ca(s: Settings, secure: SecureStack, tmp: Path) -> dict[str, str]:
    # A password in the URI, too: it must not show in what the worker prints.
    host = s.mongo_uri.get_secret_value().split("//", 1)[1].split("/", 1)[0]
    uri = f"mongodb://ct:{WRONG_PASSWORD}@{host}/?tls=true&tlsCAFile={untrusted_ca(tmp)}"
    return {"CT_MONGO_URI": uri}


@pytest.mark.parametrize(
    "case",
    [
        (_wrong_password, "CT_KAFKA_SASL_PASSWORD"),
        (_untrusted_kafka_ca, "CT_KAFKA_SSL_CA_FILE"),
        (_untrusted_mongo_ca, "CT_MONGO_URI"),
    ],
    ids=["wrong-kafka-password", "untrusted-kafka-ca", "untrusted-mongo-ca"],
)
async def test_a_bad_credential_stops_the_worker_in_one_line_and_the_fix_processes_events_once(
    secure_settings: Settings,
    secure_stack: SecureStack,
    db: mongo.Database,
    tmp_path: Path,
    case: tuple[Any, str],
) -> None:
    """The case: what breaks the settings, and the variable the one line must name."""
    breakage, names = case
    s = secure_settings
    await ensure_topics(s, s.topic_partitions, 1)
    events = [timeline_event(f"o-fix-{i % 3}", minutes=i) for i in range(6)]
    await produce(s, s.topic_timeline, [(e.order_id, CODEC.encode(e)) for e in events])

    broken = settings_env(s, **breakage(s, secure_stack, tmp_path))
    failed = await ct(broken, "run", "projector")
    assert failed.code == 2 and failed.seconds < 30, failed.stderr[-2000:]
    [line] = failed.errors()
    assert line["event"] == "service_failed" and names in line["fix"], line
    assert_no_secret([*secure_stack.secrets(), WRONG_PASSWORD], failed.stderr, failed.stdout)
    assert await committed(s, s.topic_timeline, s.group_projector) == 0
    assert await entry_ids(db) == []

    await _run_until(settings_env(s), db, want=len(events), secrets=secure_stack.secrets())
    assert sorted(await entry_ids(db)) == sorted(e.event_id for e in events)
    assert await committed(s, s.topic_timeline, s.group_projector) == len(events)


async def _run_until(
    env: dict[str, str], db: mongo.Database, *, want: int, secrets: list[str]
) -> None:
    """`ct run projector` until `want` entries are written, then SIGTERM: it must exit 0."""
    process = await asyncio.create_subprocess_exec(
        CT, "run", "projector", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await eventually(lambda: _count(db, want), timeout=60, what=f"{want} entries")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert_no_secret(secrets, stderr.decode())


async def test_readiness_is_false_after_a_refused_credential(secure_settings: Settings) -> None:
    """The service itself: it raises Rejected and never reports ready."""
    service = ProjectorService(
        load_settings(**{**secure_settings.model_dump(), "kafka_sasl_password": WRONG_PASSWORD}),
        CODEC,
    )
    with pytest.raises(Rejected, match="CT_KAFKA_SASL_PASSWORD"):
        await service.run(asyncio.Event())
    assert not service.is_ready()


async def test_a_topic_without_an_acl_is_named_with_the_fix_and_processed_once_granted(
    secure_settings: Settings, settings: Settings, secure_stack: SecureStack, db: mongo.Database
) -> None:
    """Topics outside user ct's prefixes, made by an administrator; then the ACL is granted."""
    run = settings.topic_timeline.split("-")[1]
    admin = settings.model_copy(update={"topic_timeline": f"x-{run}-timeline"})
    s = secure_settings.model_copy(update={"topic_timeline": admin.topic_timeline})
    await ensure_topics(admin, admin.topic_partitions, 1)
    events = [timeline_event(f"o-acl-{i}", minutes=i) for i in range(3)]
    await produce(admin, admin.topic_timeline, [(e.order_id, CODEC.encode(e)) for e in events])

    failed = await ct(settings_env(s), "run", "projector")
    assert failed.code == 2 and failed.seconds < 30, failed.stderr[-2000:]
    [line] = failed.errors()
    assert f"topic {s.topic_timeline}" in line["fix"] and "ACL" in line["fix"], line

    acl = ["--allow-principal", "User:ct", "--topic", s.topic_timeline, "--operation", "Read"]
    await asyncio.to_thread(secure_stack.kafka_acls, "--add", *acl)
    try:
        await _run_until(settings_env(s), db, want=len(events), secrets=secure_stack.secrets())
    finally:
        await asyncio.to_thread(secure_stack.kafka_acls, "--remove", "--force", *acl)
    assert sorted(await entry_ids(db)) == sorted(e.event_id for e in events)


async def test_a_user_without_acls_gets_the_authorization_error_in_one_line(
    secure_settings: Settings, secure_stack: SecureStack
) -> None:
    stranger = settings_env(
        secure_settings,
        CT_KAFKA_SASL_USERNAME=secure_stack["CT_STACK_KAFKA_NOACL_USERNAME"],
        CT_KAFKA_SASL_PASSWORD=secure_stack["CT_STACK_KAFKA_NOACL_PASSWORD"],
    )
    created = await ct(stranger, "topics", "create")
    assert created.code == 2 and created.stderr.count("\n") == 1, created.stderr
    assert "does not allow user ct-noacl" in created.stderr and "ACL" in created.stderr
    worker = await ct(stranger, "run", "projector")
    assert worker.code == 2 and worker.seconds < 30
    [line] = worker.errors()
    assert "user ct-noacl" in line["fix"]
    assert_no_secret(secure_stack.secrets(), created.stderr, worker.stderr)


async def test_mutual_tls_authenticates_with_the_client_certificate(
    secure_settings: Settings, secure_stack: SecureStack
) -> None:
    """The SSL listener wants a client certificate; its CN is the user, ct."""
    s = load_settings(
        **{
            **secure_settings.model_dump(),
            "kafka_bootstrap": secure_stack["CT_STACK_KAFKA_MTLS_BOOTSTRAP"],
            "kafka_security_protocol": "SSL",
            "kafka_sasl_mechanism": None,
            "kafka_sasl_username": None,
            "kafka_sasl_password": None,
            "kafka_ssl_cert_file": secure_stack["CT_STACK_KAFKA_CLIENT_CERT"],
            "kafka_ssl_key_file": secure_stack["CT_STACK_KAFKA_CLIENT_KEY"],
        }
    )
    await ensure_topics(s, s.topic_partitions, 1)
    await produce(s, s.topic_dlq, [("k", b"over mutual TLS")])
    [record] = await read_topic(s, s.topic_dlq, want=1)
    assert record.value == b"over mutual TLS"

    env = settings_env(s)
    del env["CT_KAFKA_SSL_CERT_FILE"], env["CT_KAFKA_SSL_KEY_FILE"]
    without = await ct(env, "topics", "create")
    assert without.code == 1 and without.stderr.count("\n") == 1, without.stderr
    assert "CT_KAFKA_SSL_CERT_FILE" in without.stderr


async def test_the_ct_commands_name_the_setting_when_a_server_cannot_be_reached(
    settings: Settings,
) -> None:
    """No traceback: one line with the setting and what was tried, exit 1."""
    nowhere = settings_env(settings, CT_KAFKA_BOOTSTRAP="127.0.0.1:1")
    for args in (["topics", "create"], ["dlq", "list"], ["check", "kafka", "--timeout", "1"]):
        done = await ct(nowhere, *args)
        assert done.code == 1 and done.stderr.count("\n") == 1, (args, done.stderr)
        assert "127.0.0.1:1" in done.stderr and "Traceback" not in done.stderr
    assert "CT_KAFKA_BOOTSTRAP" in (await ct(nowhere, "topics", "create")).stderr
    emit = await ct(
        nowhere, "emit", "--order", "o", "--store", "s", "--status", "SHIPPED",
        "--customer-email", "jane@example.org", "--store-email", "shop@example.com",
    )  # fmt: skip
    assert emit.code == 1 and "CT_KAFKA_BOOTSTRAP=127.0.0.1:1" in emit.stderr

    mongo_uri = f"mongodb://ct:{WRONG_PASSWORD}@127.0.0.1:1/"
    timeline = await ct(settings_env(settings, CT_MONGO_URI=mongo_uri), "timeline", "o-1")
    assert timeline.code == 1 and timeline.stderr.count("\n") == 1, timeline.stderr
    assert "CT_MONGO_URI=mongodb://ct:***@127.0.0.1:1/" in timeline.stderr
    assert WRONG_PASSWORD not in timeline.stderr
    worker = await ct(settings_env(settings, CT_KAFKA_BOOTSTRAP="127.0.0.1:1"), "run", "projector")
    assert worker.code == 1 and "CT_KAFKA_BOOTSTRAP" in worker.errors()[0]["fix"]
