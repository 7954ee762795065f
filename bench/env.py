"""Where a bench run happens: the stack (shared or private), its own SMTP sink, unique names.

Every stage gets its own topics, consumer group and database (`Names`), so a run never reads
another run's data and cleanup deletes exactly what the run made.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from tests.support.net import free_port
from tests.support.polling import until
from worker.adapters import mongo
from worker.adapters.kafka import ensure_topics
from worker.adapters.kafka_client import client_options
from worker.apps import checks
from worker.config import Settings, load_settings
from worker.crypto import generate_key

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "deploy" / "local" / "stack"
CT = REPO / ".venv" / "bin" / "ct"
PARTITIONS = 6
# Ports of the private stack: away from the shared stack's and from the fault tests' defaults.
# CT_BENCH_PORT_OFFSET moves all four, so that two private benches can run side by side.
_OFFSET = int(os.environ.get("CT_BENCH_PORT_OFFSET", "0"))
PRIVATE_PORTS = {
    "CT_STACK_KAFKA_PORT": 39092 + _OFFSET,
    "CT_STACK_CONTROLLER_PORT": 39093 + _OFFSET,
    "CT_STACK_MONGO_PORT": 47017 + _OFFSET,
    "CT_STACK_SMTP_PORT": 31025 + _OFFSET,
}


class BenchError(Exception):
    """The bench cannot go on: a server is missing, a port is taken, a stage timed out."""


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Names:
    """One stage's Kafka topics, consumer groups and database."""

    prefix: str
    settings: Settings

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
    smtp_port: int
    encryption_key: str
    topics: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    # The private stack's FerretDB, whose CPU time each step reports (None on the shared stack).
    ferret_pid: int | None = None

    def names(self, stage: str) -> Names:
        prefix = f"bench-{self.run_id}-{stage}"
        db = f"ct_bench_{self.run_id}_{stage}"
        settings = self.base.model_copy(
            update={
                "topic_order_status": f"{prefix}-orders",
                "topic_timeline": f"{prefix}-timeline",
                "topic_dlq": f"{prefix}-dlq",
                "group_notifier": f"{prefix}-notifier",
                "group_projector": f"{prefix}-projector",
                "mongo_db": db,
                "smtp_host": "127.0.0.1",
                "smtp_port": self.smtp_port,
            }
        )
        return Names(prefix, settings)

    async def create(self, names: Names) -> Names:
        """Make the stage's topics (PARTITIONS each, like production) and remember them."""
        s = names.settings
        await ensure_topics(s, PARTITIONS, 1)
        self.topics += [s.topic_order_status, s.topic_timeline, s.topic_dlq]
        self.databases.append(s.mongo_db)
        return names

    def sink_count(self) -> int:
        """Messages the bench's sink has filed so far (lines of its index)."""
        index = self.workdir / "sink" / "index.jsonl"
        if not index.exists():
            return 0
        with index.open("rb") as lines:
            return sum(1 for _ in lines)

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


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child process whose output goes to `log` (a file: a full pipe would stall it)."""
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


async def poll_until(done: Callable[[], bool], limit_s: float, every_s: float = 0.1) -> bool:
    """Whether a condition that has no event to wait on (a file, a process) held in time."""
    return bool(await until(done, limit_s, every_s))


async def _start_sink(port: int, directory: Path, log: Path) -> subprocess.Popen[bytes]:
    """`ct sink`, the stack's capture server program, as a process of the bench's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CT_")}
    command = [str(CT), "sink", "--host", "127.0.0.1", "--port", str(port), "--dir", str(directory)]
    proc = spawn(command, env | {"CT_LOG_FORMAT": "json"}, log)
    await checks.wait_until(lambda: checks.smtp_answers("127.0.0.1", port), 30)
    return proc


def stop_process(proc: subprocess.Popen[bytes], limit_s: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(limit_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def bench_env(*, private: bool) -> AsyncIterator[BenchEnv]:
    """The stack (private: started and deleted here), a sink of the bench's own, and cleanup."""
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"ct-bench-{run_id}-"))
    stack_env: dict[str, str] | None = None
    overrides: dict[str, object] = {}
    if private:
        taken = [p for p in PRIVATE_PORTS.values() if port_in_use(p)]
        if taken:
            raise BenchError(
                f"ports {taken} are taken: is another private bench stack running? "
                "CT_BENCH_PORT_OFFSET=100 (say) moves the private stack's ports"
            )
        stack_env = _private_stack_env(workdir / "state")
        print(f"bench: starting a private stack in {workdir / 'state'} (Kafka, FerretDB)")
        await asyncio.to_thread(_stack, ["up", "kafka", "ferretdb"], stack_env)
        overrides = {
            "kafka_bootstrap": f"127.0.0.1:{PRIVATE_PORTS['CT_STACK_KAFKA_PORT']}",
            "mongo_uri": f"mongodb://127.0.0.1:{PRIVATE_PORTS['CT_STACK_MONGO_PORT']}",
        }
    base = load_settings(**overrides)
    # The shared sink's index is read by others' tests: the bench files its mail elsewhere.
    smtp_port = PRIVATE_PORTS["CT_STACK_SMTP_PORT"] if private else free_port()
    sink = None
    env = BenchEnv(base, run_id, workdir, smtp_port, generate_key())
    pid_file = workdir / "state" / "run" / "ferretdb.pid"
    if private and pid_file.exists():
        env.ferret_pid = int(pid_file.read_text().strip())
    try:
        await asyncio.wait_for(checks.kafka_answers(base), 15)
        await asyncio.wait_for(checks.mongo_answers(base), 15)
        sink = await _start_sink(smtp_port, workdir / "sink", workdir / "sink.log")
        yield env
    finally:
        if sink is not None:
            stop_process(sink)
        if stack_env is not None:
            await asyncio.to_thread(_stack, ["down"], stack_env)
        else:
            await env.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
