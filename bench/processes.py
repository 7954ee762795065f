"""Child processes of the bench (workers, upstreams, load generators) and their CPU time."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.support.polling import until

REPO = Path(__file__).resolve().parent.parent
CT = REPO / ".venv" / "bin" / "ct"
USER_HZ = 100  # clock ticks per second of /proc/<pid>/stat on Linux


class BenchError(Exception):
    """The bench cannot go on: a server is missing, a port is taken, a stage timed out."""


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child process whose output goes to `log` (a file: a full pipe would stall it)."""
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen[bytes], limit_s: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(limit_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def poll_until(done: Callable[[], bool], limit_s: float, every_s: float = 0.1) -> bool:
    """Whether a condition that has no event to wait on (a file, a process) held in time."""
    return bool(await until(done, limit_s, every_s))


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name; None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far; 0 once it is gone."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / USER_HZ


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process and all its descendants, live or reaped (PostgreSQL forks a backend per
    connection: a backend that ended is in its parent's children's times)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    total = sum(cpu_seconds(pid) for pid in tree)
    root_fields = _stat(root)
    if root_fields is not None:  # cutime + cstime: children the root has reaped
        total += (int(root_fields[13]) + int(root_fields[14])) / USER_HZ
    return total
