"""A private stack for the fault tests, which restart Kafka and stop FerretDB.

The shared stack (default ports and state directory) is never touched: these tests start their
own Kafka, FerretDB and sink on other ports with a state directory of their own, and stop them at
the end of the session. The jars and the FerretDB binary come from the shared cache, so `up` takes
seconds. Ports can be moved with CT_FAULTS_KAFKA_PORT, ..._CONTROLLER_PORT, ..._MONGO_PORT and
..._SMTP_PORT when the defaults are taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from tests.conftest import REPO, STACK
from tests.faults.evidence import STORE_DOMAINS
from tests.faults.procs import WorkerPool
from tests.support.dkim import DkimKeys
from tests.support.dns import LoopbackDns
from worker.adapters import mongo
from worker.adapters.kafka import ensure_topics
from worker.core.config import Settings, load_settings
from worker.core.crypto import generate_key

PARTITIONS = 6
CLUSTER_PARTITIONS = 12
# Settings a developer's shell may carry must not leak into the private stack or its workers.
KEPT_CT_VARIABLES = {"CT_CACHE_DIR"}
SINK_MODULE = "tests.support.smtp"


def _clean_environ() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith("CT_") or k in KEPT_CT_VARIABLES
    }


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"CT_FAULTS_{name}_PORT", default))


@dataclass(frozen=True)
class PrivateStack:
    state_dir: Path
    kafka_port: int
    controller_port: int
    mongo_port: int
    smtp_port: int
    # A cluster's broker k (1-based) listens on kafka_port + k - 1, its controller likewise.
    brokers: int = 1

    @property
    def sink_dir(self) -> Path:
        return self.state_dir / "sink"

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.kafka_port + k}" for k in range(self.brokers))

    def broker_pid(self, node: int) -> int:
        """The PID of broker `node` (1-based) of a cluster, from the PID file the stack wrote."""
        return int((self.state_dir / "run" / f"kafka-{node}.pid").read_text().strip())

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}"

    def env(self) -> dict[str, str]:
        return {
            **_clean_environ(),
            "CT_STATE_DIR": str(self.state_dir),
            "CT_STACK_KAFKA_PORT": str(self.kafka_port),
            "CT_STACK_CONTROLLER_PORT": str(self.controller_port),
            "CT_STACK_MONGO_PORT": str(self.mongo_port),
            "CT_STACK_SMTP_PORT": str(self.smtp_port),
            "CT_STACK_BROKERS": str(self.brokers),
            # No TLS/SASL listeners, no Mailpit: the faults need none, and their default ports
            # are the shared stack's.
            "CT_STACK_SECURE": "0",
            # The capture server that refuses while <sink>/FAULT exists (`ct sink` cannot).
            "CT_STACK_SINK_COMMAND": f"env PYTHONPATH={REPO} {sys.executable} -m {SINK_MODULE}",
        }

    def run(self, *args: str, timeout: float = 180) -> None:
        result = subprocess.run(
            [str(STACK), *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise AssertionError(
                f"`stack {' '.join(args)}` failed ({result.returncode}):\n{result.stderr[-3000:]}"
            )

    async def arun(self, *args: str, timeout: float = 180) -> None:
        """`stack ARGS` without blocking the test's event loop (faults run beside monitoring)."""
        await asyncio.to_thread(self.run, *args, timeout=timeout)


def _taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _running(stack: PrivateStack) -> Iterator[PrivateStack]:
    ports = [
        *(stack.kafka_port + k for k in range(stack.brokers)),
        *(stack.controller_port + k for k in range(stack.brokers)),
        stack.mongo_port,
        stack.smtp_port,
    ]
    if busy := [p for p in ports if _taken(p)]:
        pytest.fail(
            f"ports {busy} are taken: another private stack runs? Set CT_FAULTS_*_PORT to move.",
            pytrace=False,
        )
    try:
        stack.run("up", timeout=600)
        yield stack
    finally:
        stack.run("down", timeout=180)


@pytest.fixture(scope="session")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    yield from _running(
        PrivateStack(
            state_dir=tmp_path_factory.mktemp("ct-faults-stack"),
            kafka_port=_port("KAFKA", 29092),
            controller_port=_port("CONTROLLER", 29093),
            mongo_port=_port("MONGO", 37017),
            smtp_port=_port("SMTP", 21025),
        )
    )


@pytest.fixture(scope="session")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    """Three KRaft brokers (each also a controller voter), FerretDB and the sink, private."""
    yield from _running(
        PrivateStack(
            state_dir=tmp_path_factory.mktemp("ct-faults-cluster"),
            kafka_port=_port("CLUSTER_KAFKA", 29192),
            controller_port=_port("CLUSTER_CONTROLLER", 29195),
            mongo_port=_port("CLUSTER_MONGO", 37117),
            smtp_port=_port("CLUSTER_SMTP", 21125),
            brokers=3,
        )
    )


@dataclass(frozen=True)
class Pipeline:
    """One test's slice of the private stack: its own topics, groups and database."""

    stack: PrivateStack
    settings: Settings
    log_dir: Path
    run_id: str
    dns_resolver: str  # the loopback DNS that serves the senders' SPF records

    def worker_env(self, **overrides: str) -> dict[str, str]:
        s = self.settings
        assert s.encryption_key is not None
        env = {
            **_clean_environ(),
            "CT_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "CT_MONGO_URI": s.mongo_uri.get_secret_value(),
            "CT_MONGO_DB": s.mongo_db,
            "CT_SMTP_HOST": "127.0.0.1",
            "CT_SMTP_PORT": str(s.smtp_port),
            "CT_TOPIC_ORDER_STATUS": s.topic_order_status,
            "CT_TOPIC_TIMELINE": s.topic_timeline,
            "CT_TOPIC_DLQ": s.topic_dlq,
            "CT_GROUP_NOTIFIER": s.group_notifier,
            "CT_GROUP_PROJECTOR": s.group_projector,
            "CT_ENCRYPTION_KEY": s.encryption_key.get_secret_value(),
            "CT_DKIM_SELECTOR": s.dkim_selector or "",
            "CT_DKIM_PRIVATE_KEY_FILE": str(s.dkim_private_key_file),
            "CT_LOG_FORMAT": "json",
            "CT_LOG_LEVEL": "info",
            # Recover within seconds of a fault ending rather than after a 30 s backoff.
            "CT_RETRY_MAX_DELAY_S": "2",
            "CT_SHUTDOWN_GRACE_S": str(s.shutdown_grace_s),
            # The relay authenticates senders: against the tests' DNS, never the machine's.
            "CT_DNS_RESOLVERS": self.dns_resolver,
        }
        return env | overrides


@pytest.fixture(scope="session")
def fault_key() -> str:
    return generate_key()


@pytest.fixture(scope="session")
def fault_dns(dns_server: LoopbackDns) -> LoopbackDns:
    """SPF for the stores the fault tests write as (`evidence.store_address`): 127.0.0.1."""
    for n in range(STORE_DOMAINS):
        dns_server.publish_txt(f"shop{n}.example.net", "v=spf1 ip4:127.0.0.1 -all")
    dns_server.apply()
    return dns_server


@contextlib.asynccontextmanager
async def _slice(
    stack: PrivateStack,
    key: str,
    tmp_path: Path,
    *,
    partitions: int,
    dkim_keys: DkimKeys,
    dns: LoopbackDns,
) -> AsyncIterator[Pipeline]:
    run = uuid.uuid4().hex[:8]
    settings = load_settings(
        **dkim_keys.settings(),
        kafka_bootstrap=stack.kafka_bootstrap,
        mongo_uri=stack.mongo_uri,
        mongo_db=f"ct_faults_{run}",
        smtp_port=stack.smtp_port,
        topic_order_status=f"f-{run}-orders",
        topic_timeline=f"f-{run}-timeline",
        topic_dlq=f"f-{run}-dlq",
        group_notifier=f"f-{run}-notifier",
        group_projector=f"f-{run}-projector",
        encryption_key=key,
        topic_partitions=partitions,
        shutdown_grace_s=10,
    )
    # A cluster's topics have a replica on every broker, as `ct topics create --replication 3`.
    await ensure_topics(settings, partitions, stack.brokers)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    # The sink is shared by the session's tests: no test may leave it refusing mail.
    (stack.sink_dir / "FAULT").unlink(missing_ok=True)
    yield Pipeline(stack, settings, log_dir, run, dns.resolver)
    (stack.sink_dir / "FAULT").unlink(missing_ok=True)


@pytest.fixture
async def pipeline(
    private_stack: PrivateStack,
    fault_key: str,
    dkim_keys: DkimKeys,
    tmp_path: Path,
    fault_dns: LoopbackDns,
) -> AsyncIterator[Pipeline]:
    async with _slice(
        private_stack,
        fault_key,
        tmp_path,
        partitions=PARTITIONS,
        dkim_keys=dkim_keys,
        dns=fault_dns,
    ) as slice_:
        yield slice_


@pytest.fixture
async def cluster_pipeline(
    cluster_stack: PrivateStack,
    fault_key: str,
    dkim_keys: DkimKeys,
    tmp_path: Path,
    fault_dns: LoopbackDns,
) -> AsyncIterator[Pipeline]:
    async with _slice(
        cluster_stack,
        fault_key,
        tmp_path,
        partitions=CLUSTER_PARTITIONS,
        dkim_keys=dkim_keys,
        dns=fault_dns,
    ) as slice_:
        yield slice_


@contextlib.contextmanager
def _worker_pool(pipeline: Pipeline) -> Iterator[WorkerPool]:
    pool = WorkerPool(pipeline.worker_env(), pipeline.log_dir)
    try:
        yield pool
    finally:
        pool.cleanup()


@contextlib.asynccontextmanager
async def _database(pipeline: Pipeline) -> AsyncIterator[mongo.Database]:
    client: AsyncMongoClient[dict[str, Any]] = mongo.connect(
        pipeline.settings, app_name="ct-fault-tests"
    )
    try:
        yield client[pipeline.settings.mongo_db]
    finally:
        await client.close()


@pytest.fixture
def workers(pipeline: Pipeline) -> Iterator[WorkerPool]:
    with _worker_pool(pipeline) as pool:
        yield pool


@pytest.fixture
async def fault_db(pipeline: Pipeline) -> AsyncIterator[mongo.Database]:
    async with _database(pipeline) as db:
        yield db


@pytest.fixture
def cluster_workers(cluster_pipeline: Pipeline) -> Iterator[WorkerPool]:
    with _worker_pool(cluster_pipeline) as pool:
        yield pool


@pytest.fixture
async def cluster_db(cluster_pipeline: Pipeline) -> AsyncIterator[mongo.Database]:
    async with _database(cluster_pipeline) as db:
        yield db
