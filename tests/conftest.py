"""Shared fixtures: the real local stack, and per-test topics, database and SMTP capture server."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from pymongo import AsyncMongoClient

from tests.support.dkim import DkimKeys
from tests.support.dns import LoopbackDns
from tests.support.net import free_port
from tests.support.postfix import LoopbackPostfix
from tests.support.smtp import FaultyCapture
from worker.adapters import mongo
from worker.adapters.dialect import Dialect
from worker.adapters.kafka import ensure_topics
from worker.adapters.smtp_server import bound_port, start_smtp_server
from worker.apps import checks
from worker.core.config import Settings, load_settings
from worker.core.crypto import generate_key
from worker.core.logging import configure_logging
from worker.devtools.sink import read_index

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "deploy" / "local" / "stack"


def _stack_answers() -> bool:
    async def probe() -> None:
        base = load_settings()
        await asyncio.wait_for(checks.kafka_answers(base), 5)
        await asyncio.wait_for(checks.mongo_answers(base), 5)
        await asyncio.wait_for(checks.smtp_answers(base.smtp_host, base.smtp_port), 5)

    try:
        asyncio.run(probe())
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def stack() -> None:
    """Kafka, FerretDB and the sink on loopback: started here when they are not running."""
    if _stack_answers():
        return
    result = subprocess.run([str(STACK), "up"], capture_output=True, text=True, timeout=900)
    if result.returncode != 0 or not _stack_answers():
        pytest.fail(
            "the local stack could not be started; `deploy/local/stack up` said:\n"
            + result.stderr[-3000:],
            pytrace=False,
        )


@dataclass(frozen=True)
class SecureStack:
    """The stack's secure listeners, as `deploy/local/stack secure-env` prints them."""

    variables: dict[str, str]

    @property
    def worker_settings(self) -> dict[str, str]:
        """The CT_ settings a worker takes (the CT_STACK_* extras left out), as field names."""
        fields = Settings.model_fields
        return {
            name[3:].lower(): value
            for name, value in self.variables.items()
            if name[3:].lower() in fields
        }

    def __getitem__(self, name: str) -> str:
        return self.variables[name]

    def secrets(self) -> list[str]:
        """Every password it holds: none may appear in a log line, an output or a metric."""
        return [v for k, v in self.variables.items() if k.endswith("PASSWORD")]

    def path(self, name: str) -> str:
        """One of `deploy/local/stack paths`: secure (certificates), kafka_lib, mailpit_bin."""
        paths = subprocess.run(
            [str(STACK), "paths"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        return dict(line.split("=", 1) for line in paths.splitlines())[name]

    def kafka_acls(self, *args: str) -> None:
        """Kafka's own AclCommand against the plaintext listener (whose ANONYMOUS is a super
        user), with the jars the stack runs."""
        lib = self.path("kafka_lib")
        command = ["java", "-Xmx256m", "-cp", f"{lib}/*", "org.apache.kafka.tools.AclCommand"]
        command += ["--bootstrap-server", self["CT_STACK_KAFKA_PLAINTEXT"], *args]
        subprocess.run(command, capture_output=True, timeout=120, check=True)


def _secure_env() -> dict[str, str] | None:
    result = subprocess.run(
        [str(STACK), "secure-env"], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        return None
    variables = {}
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export":
            name, _, value = words[1].partition("=")
            variables[name] = value
    return variables


def _secure_answers(secure: SecureStack) -> str | None:
    """None when every secure server answers, else what did not."""

    async def probe() -> None:
        settings = load_settings(**secure.worker_settings)
        await asyncio.wait_for(checks.kafka_answers(settings), 10)
        await asyncio.wait_for(checks.mongo_answers(settings), 10)
        for api in (secure["CT_STACK_MAILPIT_API"], secure["CT_STACK_MAILPIT_TLS_API"]):
            await asyncio.to_thread(urllib.request.urlopen, f"{api}/readyz", timeout=5)

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def secure_stack(stack: None) -> SecureStack:
    """Kafka's SASL_SSL and mutual-TLS listeners, FerretDB over TLS and the two Mailpits,
    started here (`deploy/local/stack up`) when they are not running."""
    found = _running_secure_stack()
    if isinstance(found, str):
        result = subprocess.run([str(STACK), "up"], capture_output=True, text=True, timeout=900)
        found = _running_secure_stack()
        if isinstance(found, str):
            pytest.fail(
                f"the stack's secure servers do not answer ({found}). A Kafka started by an "
                "older stack script has no SASL_SSL listener: `deploy/local/stack restart kafka "
                "ferretdb` gives it one. `deploy/local/stack up` said:\n" + result.stderr[-3000:],
                pytrace=False,
            )
    return found


def _running_secure_stack() -> SecureStack | str:
    """The secure stack when all of it answers, else what is wrong."""
    variables = _secure_env()
    if variables is None:
        return "`deploy/local/stack secure-env` failed"
    secure = SecureStack(variables)
    return _secure_answers(secure) or secure


@pytest.fixture
def secure_settings(settings: Settings, secure_stack: SecureStack) -> Settings:
    """The test's own topics, groups and database, reached through the secure listeners."""
    return load_settings(**{**settings.model_dump(), **secure_stack.worker_settings})


@pytest.fixture(scope="session")
def encryption_key() -> str:
    return generate_key()


@pytest.fixture(scope="session")
def dkim_keys(tmp_path_factory: pytest.TempPathFactory) -> DkimKeys:
    """An RSA and an Ed25519 DKIM key, as files the workers load (CT_DKIM_*)."""
    return DkimKeys.create(tmp_path_factory.mktemp("dkim"))


@pytest.fixture
def settings(
    stack: None, encryption_key: str, dns_server: LoopbackDns, dkim_keys: DkimKeys
) -> Settings:
    """Settings whose topics, consumer groups and database belong to this test alone.

    DNS goes to the tests' own server on loopback: no lookup of a test leaves the machine.
    """
    run = uuid.uuid4().hex[:10]
    return load_settings(
        **dkim_keys.settings(),
        dns_resolvers=dns_server.resolver,
        dns_timeout_s=2,
        topic_order_status=f"t-{run}-orders",
        topic_timeline=f"t-{run}-timeline",
        topic_dlq=f"t-{run}-dlq",
        group_notifier=f"g-{run}-notifier",
        group_projector=f"g-{run}-projector",
        mongo_db=f"ct_test_{run}",
        encryption_key=encryption_key,
        topic_partitions=3,
        shutdown_grace_s=5,
        retry_max_delay_s=1,
    )


@pytest.fixture
async def topics(settings: Settings) -> Settings:
    await ensure_topics(settings, settings.topic_partitions, 1)
    return settings


@pytest.fixture
async def mongo_client(settings: Settings) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client = mongo.connect(settings, app_name="ct-tests")
    try:
        yield client
    finally:
        await client.drop_database(settings.mongo_db)
        await client.close()


@pytest.fixture
def db(settings: Settings, mongo_client: AsyncMongoClient[dict[str, Any]]) -> mongo.Database:
    return mongo_client[settings.mongo_db]


@pytest.fixture
async def dialect(db: mongo.Database) -> Dialect:
    """The test database's dialect, as the workers detect it at start (after the indexes)."""
    return await mongo.prepare(db)


@dataclass
class Capture:
    """An SMTP capture server of this test: real sockets, its own directory and port."""

    handler: FaultyCapture
    port: int

    @property
    def directory(self) -> Path:
        return self.handler.directory

    def messages(self) -> list[dict[str, Any]]:
        return read_index(self.directory)

    def raw(self, entry: dict[str, Any]) -> bytes:
        return (self.directory / str(entry["file"])).read_bytes()

    def refuse(self, reply: str) -> None:
        self.handler.refuse(reply)

    def accept(self) -> None:
        self.handler.accept()


@pytest.fixture
async def capture(tmp_path: Path) -> AsyncIterator[Capture]:
    handler = FaultyCapture(tmp_path / "mail")
    server = await start_smtp_server(
        handler, "127.0.0.1", 0, hostname="test-sink", data_size_limit=64 * 1024 * 1024
    )
    try:
        yield Capture(handler, bound_port(server))
    finally:
        server.close()
        await server.wait_closed()
        handler.close()


@pytest.fixture
def with_capture(settings: Settings, capture: Capture) -> Settings:
    """The test's settings, sending mail to the test's own capture server."""
    return settings.model_copy(update={"smtp_port": capture.port})


@pytest.fixture
def unique() -> Iterator[Callable[[str], str]]:
    run = uuid.uuid4().hex[:8]
    yield lambda name: f"{name}-{run}"


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackDns]:
    """A real DNS server (dnsmasq) on loopback; tests publish records, then `apply()` them."""
    server = LoopbackDns(tmp_path_factory.mktemp("dns"))
    server.apply()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dkim_dns(dns_server: LoopbackDns, dkim_keys: DkimKeys) -> LoopbackDns:
    """The loopback DNS server publishing the test keys' DKIM and DMARC records for the
    default alias domain, exactly as `ct dns records` prints them."""
    dkim_keys.publish(dns_server, load_settings().domain)
    return dns_server


@pytest.fixture(scope="session")
def postfix() -> Iterator[LoopbackPostfix]:
    """Debian's Postfix as a private smarthost on loopback; it delivers mail for the alias
    domain (bounces too) to a relay the test runs on `postfix.relay_port`."""
    server = LoopbackPostfix(alias_domain=load_settings().domain, relay_port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def json_logs(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], str]]:
    """The production log set-up (JSON lines on stderr); call the result for the text so far.

    The loggers are configured on the process's own stderr (file descriptor 2, which `capfd`
    reads), not on pytest's per-test stand-in: structlog caches each module's logger on first use,
    with its stream, and a stand-in closed after this test would break every later log line.
    """
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    configure_logging("info", "json", "ct.example.com")
    try:
        yield lambda: capfd.readouterr().err
    finally:
        structlog.reset_defaults()


@pytest.fixture(scope="session")
def registry_url(stack: None) -> str:
    """The stack's Apicurio Registry (ccompat API), started (built the first time) when it is
    not running. A registry that cannot be built or started fails the tests, loudly."""
    from tests.support.bus import registry_url as start_registry

    try:
        return start_registry()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
