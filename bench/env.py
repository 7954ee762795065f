"""Where a bench run happens: the stack (shared or private), its own SMTP sink, unique names.

Every stage gets its own topics, consumer group and database (`Names`), so a run never reads
another run's data and cleanup deletes exactly what the run made.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from bench.processes import REPO, BenchError, cpu_seconds, tree_cpu_seconds
from bench.upstreams import CaptureSink, PostfixSink, Upstream
from tests.support.net import free_port
from worker.adapters import mongo
from worker.adapters.dkim_keys import generate_key as generate_dkim_key
from worker.adapters.dkim_keys import write_key
from worker.adapters.kafka import ensure_topics
from worker.adapters.kafka_client import client_options
from worker.apps import checks
from worker.core.config import Settings, load_settings
from worker.core.crypto import generate_key

STACK = REPO / "deploy" / "local" / "stack"
PARTITIONS = 6
# Ports of the private stack, all in one block away from the shared stack's and the fault tests'
# defaults, and below the kernel's ephemeral range (32768-60999 here), whose ports are lent to
# outgoing connections: a client reconnecting to a stopped server there can even connect to
# itself and hold the port. CT_BENCH_PORT_OFFSET moves the whole block (two benches side by side).
_BLOCK = 30000 + int(os.environ.get("CT_BENCH_PORT_OFFSET", "0"))
PRIVATE_PORTS = {
    # A cluster's brokers listen on 92, 93, 94 and their controllers on 95, 96, 97.
    "CT_STACK_KAFKA_PORT": _BLOCK + 92,
    "CT_STACK_CONTROLLER_PORT": _BLOCK + 95,
    "CT_STACK_MONGO_PORT": _BLOCK + 17,
    "CT_STACK_SMTP_PORT": _BLOCK + 25,
}
PRIVATE_SMTP_SINK_PORT = _BLOCK + 26
CLUSTER_BROKERS = 3
# The second FerretDB of the backend comparison, on PostgreSQL, in a state directory of its own:
# two ports of this range that nothing holds at the start (see _bindable).
PG_PORT_RANGE = range(_BLOCK + 40, _BLOCK + 90)
# The scale-out rows' cluster: brokers and controllers on consecutive ports nothing holds.
CLUSTER_PORT_RANGE = range(_BLOCK + 100, _BLOCK + 200)


def _bindable(port: int) -> bool:
    """Whether nothing holds this port, not even an outgoing connection: ports in the kernel's
    ephemeral range (32768-60999) are lent to clients' connections for a while."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_runs(ports: range, length: int, count: int) -> list[int]:
    """The first ports of `count` runs of `length` consecutive bindable ports in `ports`."""
    starts: list[int] = []
    port = ports.start
    while len(starts) < count and port + length <= ports.stop:
        if all(_bindable(p) for p in range(port, port + length)):
            starts.append(port)
            port += length
        else:
            port += 1
    if len(starts) < count:
        raise BenchError(f"no {count} runs of {length} free ports in {ports.start}-{ports.stop}")
    return starts


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Names:
    """One stage's Kafka topics, consumer groups and database, and the upstream it sends to."""

    prefix: str
    settings: Settings
    upstream: Upstream
    partitions: int = 0  # set by BenchEnv.create

    @property
    def order_topic(self) -> str:
        return self.settings.topic_order_status

    @property
    def timeline_topic(self) -> str:
        return self.settings.topic_timeline


@dataclass
class BenchEnv:
    base: Settings
    run_id: str
    workdir: Path
    encryption_key: str
    # Where the workers send mail, by name: "capture" (`ct sink`) and "smtp-sink" (Postfix).
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    # Each server of a private stack by component ("kafka", "ferretdb", ...): whose CPU time each
    # step reports. Empty on the shared stack, whose servers also work for other people.
    servers: dict[str, list[int]] = field(default_factory=dict)
    brokers: int = 1
    # MongoDB URIs by FerretDB backend ("sqlite", "postgresql"): the backend comparison's.
    mongo_backends: dict[str, str] = field(default_factory=dict)
    # The environments of the private stacks started for this run, each reset at the end.
    stacks: list[dict[str, str]] = field(default_factory=list)

    async def use_cluster(self) -> bool:
        """Swap the private stack's one broker for a cluster of CLUSTER_BROKERS on the same
        ports (the scale-out rows); False on the shared stack, which keeps its one broker."""
        if not self.stacks:
            return False
        await asyncio.to_thread(_stack, ["down", "kafka"], self.stacks[0])
        state = self.workdir / "state-cluster"
        first, controller = _free_runs(CLUSTER_PORT_RANGE, CLUSTER_BROKERS, 2)
        cluster = _private_stack_env(state) | {
            "CT_STACK_BROKERS": str(CLUSTER_BROKERS),
            "CT_STACK_KAFKA_PORT": str(first),
            "CT_STACK_CONTROLLER_PORT": str(controller),
        }
        self.stacks.append(cluster)
        await asyncio.to_thread(_stack, ["up", "kafka"], cluster)
        bootstrap = ",".join(f"127.0.0.1:{first + k}" for k in range(CLUSTER_BROKERS))
        self.base = self.base.model_copy(update={"kafka_bootstrap": bootstrap})
        self.brokers = CLUSTER_BROKERS
        self.servers["kafka"] = _server_pids(state)["kafka"]
        return True

    def names(
        self, stage: str, upstream: str = "smtp-sink", *, mongo_backend: str | None = None
    ) -> Names:
        prefix = f"bench-{self.run_id}-{stage}"
        db = f"ct_bench_{self.run_id}_{stage}"
        target = self.upstreams[upstream]
        settings = self.base.model_copy(
            update={
                "topic_order_status": f"{prefix}-orders",
                "topic_timeline": f"{prefix}-timeline",
                "topic_dlq": f"{prefix}-dlq",
                "group_notifier": f"{prefix}-notifier",
                "group_projector": f"{prefix}-projector",
                "mongo_db": db,
                "smtp_host": "127.0.0.1",
                "smtp_port": target.port,
            }
            | (
                {"mongo_uri": SecretStr(self.mongo_backends[mongo_backend])}
                if mongo_backend
                else {}
            )
        )
        return Names(prefix, settings, target)

    async def create(
        self, names: Names, partitions: int = PARTITIONS, replication: int = 1
    ) -> Names:
        """Make the stage's topics (PARTITIONS each, like production) and remember them.

        Replication 1 for the one-process stages, as every run before the cluster; the
        scale-out rows ask for a replica on every broker (up to 3), as a cluster is deployed.
        """
        s = names.settings
        await ensure_topics(s, partitions, min(replication, self.brokers))
        self.topics += [s.topic_order_status, s.topic_timeline, s.topic_dlq]
        self.databases.append(s.mongo_db)
        names.partitions = partitions
        return names

    def server_cpu(self) -> dict[str, float]:
        """CPU seconds so far of each server component, the upstreams and the bench itself."""
        used = {
            name: sum(tree_cpu_seconds(pid) for pid in pids) for name, pids in self.servers.items()
        }
        for upstream in self.upstreams.values():
            used[f"upstream {upstream.name}"] = cpu_seconds(upstream.pid)
        times = os.times()
        used["bench (load, watchers)"] = times.user + times.system
        return used

    def dkim_key_file(self) -> Path:
        path = self.workdir / "dkim-bench.pem"
        if not path.exists():
            write_key(generate_dkim_key("rsa"), path, overwrite=False)
        return path

    def worker_env(self, names: Names) -> dict[str, str]:
        """The environment of a `ct run` subprocess: only this stage's CT_* settings."""
        s = names.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("CT_")}
        env |= {
            "CT_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "CT_MONGO_URI": s.mongo_uri.get_secret_value(),
            "CT_MONGO_DB": s.mongo_db,
            "CT_SMTP_HOST": s.smtp_host,
            "CT_SMTP_PORT": str(s.smtp_port),
            "CT_SMTP_POOL_SIZE": str(s.smtp_pool_size),
            "CT_TOPIC_ORDER_STATUS": s.topic_order_status,
            "CT_TOPIC_TIMELINE": s.topic_timeline,
            "CT_TOPIC_DLQ": s.topic_dlq,
            "CT_GROUP_NOTIFIER": s.group_notifier,
            "CT_GROUP_PROJECTOR": s.group_projector,
            "CT_ENCRYPTION_KEY": self.encryption_key,
            # Signed as deployed: an RSA key made for the run (CT_DKIM_ED25519_KEY_FILE unset).
            "CT_DKIM_SELECTOR": "bench",
            "CT_DKIM_PRIVATE_KEY_FILE": str(self.dkim_key_file()),
            "CT_LOG_FORMAT": "json",
            "CT_LOG_LEVEL": "info",  # as deployed: one canonical line per unit of work
            "CT_SHUTDOWN_GRACE_S": "5",
        }
        return env

    async def cleanup(self) -> None:
        """Delete the run's topics and databases; failures are reported, not raised."""
        admin = AIOKafkaAdminClient(**client_options(self.base))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            doomed = [t for t in self.topics if t in existing]
            if doomed:
                await admin.delete_topics(doomed)
        except Exception as exc:
            print(f"bench: could not delete topics: {exc!r}")
        finally:
            await admin.close()
        client = mongo.connect(self.base, app_name="ct-bench")
        try:
            async with asyncio.timeout(120):
                for db in self.databases:
                    await client.drop_database(db)
        except Exception as exc:
            print(f"bench: could not drop databases: {exc!r}")
        finally:
            await client.close()


def _stack(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(STACK), *args], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"deploy/local/stack {' '.join(args)} failed:\n{result.stderr[-2000:]}")


def _private_stack_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CT_")}
    if "CT_CACHE_DIR" in os.environ:  # share the downloaded Kafka jars and the FerretDB build
        env["CT_CACHE_DIR"] = os.environ["CT_CACHE_DIR"]
    # CT_STACK_SECURE=0: no TLS/SASL listeners, whose default ports are the shared stack's.
    private = {"CT_STATE_DIR": str(state), "CT_STACK_SECURE": "0"}
    return env | private | {k: str(v) for k, v in PRIVATE_PORTS.items()}


def _server_pids(state: Path, suffix: str = "") -> dict[str, list[int]]:
    """The private stack's server processes by component, from the PID files `stack` wrote."""
    servers: dict[str, list[int]] = {}
    for pid_file in sorted((state / "run").glob("*.pid")):
        component = pid_file.stem.rstrip("-0123456789")  # kafka-2 -> kafka
        if component in {"kafka", "ferretdb", "postgres"}:
            pid = int(pid_file.read_text().strip())
            servers.setdefault(component + suffix, []).append(pid)
    return servers


def _tail(run: Path) -> str:
    """The end of every log of a stack's run directory."""
    return "".join(log.read_text(errors="replace")[-2000:] for log in run.glob("*.log"))


@dataclass(frozen=True)
class PrivateBackend:
    uri: str
    servers: dict[str, list[int]]
    stack_env: dict[str, str]


async def _postgres_backend(workdir: Path) -> PrivateBackend | None:
    """FerretDB on PostgreSQL beside the main stack's FerretDB on SQLite, or None (said why)
    when the stack cannot run it here."""
    state = workdir / "state-pg"
    env = _private_stack_env(state) | {"CT_STACK_FERRETDB_BACKEND": "postgresql"}
    for attempt in range(3):
        mongo_port, postgres_port = [p for p in PG_PORT_RANGE if _bindable(p)][:2]
        env |= {
            "CT_STACK_MONGO_PORT": str(mongo_port),
            "CT_STACK_POSTGRES_PORT": str(postgres_port),
        }
        try:
            await asyncio.to_thread(_stack, ["up", "postgres", "ferretdb"], env)
            break
        except BenchError as exc:
            await asyncio.to_thread(_stack, ["reset"], env)
            # A port can be held for a moment by an outgoing connection (the ephemeral range).
            if attempt == 2 or "already in use" not in str(exc) + _tail(state / "run"):
                print(f"bench: no FerretDB on PostgreSQL, no backend comparison: {exc}")
                return None
            await asyncio.sleep(3)
    uri = f"mongodb://127.0.0.1:{env['CT_STACK_MONGO_PORT']}"
    return PrivateBackend(uri, _server_pids(state, " (postgresql)"), env)


@contextlib.asynccontextmanager
async def bench_env(*, private: bool) -> AsyncIterator[BenchEnv]:
    """The stack (private: started and deleted here), upstreams of the bench's own, cleanup."""
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"ct-bench-{run_id}-"))
    overrides: dict[str, object] = {}
    stack_env = _private_stack_env(workdir / "state") | {"CT_STACK_BROKERS": "1"}
    if private:
        ports = [*PRIVATE_PORTS.values(), PRIVATE_SMTP_SINK_PORT]
        for first in (
            PRIVATE_PORTS["CT_STACK_KAFKA_PORT"],
            PRIVATE_PORTS["CT_STACK_CONTROLLER_PORT"],
        ):
            ports += [first + k for k in range(1, CLUSTER_BROKERS)]
        taken = [p for p in ports if port_in_use(p)]
        if taken:
            raise BenchError(
                f"ports {taken} are taken: is another private bench stack running? "
                "CT_BENCH_PORT_OFFSET=100 (say) moves the private stack's ports"
            )
        print(f"bench: a private stack in {workdir / 'state'} (one Kafka broker, FerretDB)")
        try:
            await asyncio.to_thread(_stack, ["up", "kafka", "ferretdb"], stack_env)
        except BenchError:
            await asyncio.to_thread(_stack, ["down"], stack_env)  # what did start
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        overrides = {
            "kafka_bootstrap": f"127.0.0.1:{PRIVATE_PORTS['CT_STACK_KAFKA_PORT']}",
            "mongo_uri": f"mongodb://127.0.0.1:{PRIVATE_PORTS['CT_STACK_MONGO_PORT']}",
        }
    base = load_settings(**overrides)
    env = BenchEnv(base, run_id, workdir, generate_key())
    if private:
        env.stacks.append(stack_env)
        env.servers = _server_pids(workdir / "state")
        env.mongo_backends["sqlite"] = base.mongo_uri.get_secret_value()
        backend = await _postgres_backend(workdir)
        if backend is not None:
            env.stacks.append(backend.stack_env)
            env.mongo_backends["postgresql"] = backend.uri
            env.servers |= backend.servers
    # The shared sink's index is read by others' tests: the bench files its mail elsewhere.
    capture_port = PRIVATE_PORTS["CT_STACK_SMTP_PORT"] if private else free_port()
    try:
        await asyncio.wait_for(checks.kafka_answers(base), 15)
        await asyncio.wait_for(checks.mongo_answers(base), 15)
        env.upstreams["capture"] = await CaptureSink.start(
            capture_port, workdir / "sink", workdir / "sink.log"
        )
        env.upstreams["smtp-sink"] = await PostfixSink.start(
            PRIVATE_SMTP_SINK_PORT if private else free_port(), workdir / "smtp-sink.out"
        )
        yield env
    finally:
        for upstream in env.upstreams.values():
            upstream.stop()
        if private:
            for each in reversed(env.stacks):
                await asyncio.to_thread(_stack, ["reset"], each)
        else:
            await env.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
