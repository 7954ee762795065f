"""Database operations per event, from the server's own counters (not the client's).

MongoDB answers `serverStatus` with `opcounters` (insert, query, update, delete, getmore,
command). FerretDB v1.24 has no `opcounters`; its `serverStatus` carries `metrics.commands`, a
running total per command name (`find`, `insert`, `update`, ...) kept by FerretDB itself. Both are
server-wide: a stage's delta is its worker's only on a stack of its own (`--private-stack`);
on the shared stack other clients' commands are counted too, and the result says so.

One command is one round trip whatever it carries: an `insert` of 50 documents counts once, a
`find` with `$in` once, a `find` per id once per id. That is the number the issue bounds.
(MongoDB's `opcounters.insert` is the exception: it counts documents, not commands.)
"""

from __future__ import annotations

from typing import Any, Final

from worker.adapters import mongo
from worker.core.config import Settings

# What a worker's data path sends; the handshake, monitoring and session commands (hello,
# ismaster, ping, buildInfo, endSessions) and this module's own serverStatus are left out.
READS: Final = frozenset({"find", "aggregate", "count", "distinct", "getMore"})
WRITES: Final = frozenset({"insert", "update", "delete", "findAndModify"})
_OPCOUNTERS: Final = {"query": "find", "getmore": "getMore"}  # MongoDB's names -> commands'


def counts(status: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """(where the numbers come from, {command: total so far}) from a `serverStatus` answer."""
    if isinstance(status.get("opcounters"), dict):
        ops = {_OPCOUNTERS.get(k, k): int(v) for k, v in status["opcounters"].items()}
        return "mongodb serverStatus.opcounters", ops
    commands = (status.get("metrics") or {}).get("commands")
    if isinstance(commands, dict):
        totals = {
            name: int(c.get("total", 0)) - int(c.get("failed", 0))
            for name, c in commands.items()
            if isinstance(c, dict)
        }
        return "ferretdb serverStatus.metrics.commands", totals
    raise ValueError("serverStatus has neither opcounters nor metrics.commands")


async def snapshot(settings: Settings) -> tuple[str, dict[str, int]]:
    client = mongo.connect(settings, app_name="ct-bench-opcounters")
    try:
        return counts(await client.admin.command("serverStatus"))
    finally:
        await client.close()


def per_event(
    before: tuple[str, dict[str, int]], after: tuple[str, dict[str, int]], events: int, stack: str
) -> dict[str, Any]:
    """Each data command's delta over the stage, per event, and the reads and writes summed."""
    source, first = before
    _, last = after
    delta = {
        name: last.get(name, 0) - first.get(name, 0)
        for name in sorted(READS | WRITES)
        if last.get(name, 0) - first.get(name, 0) > 0
    }
    n = max(events, 1)
    return {
        "source": source,
        "server_wide": stack != "private",  # other clients of a shared stack are counted too
        "events": events,
        "per_event": {name: round(count / n, 2) for name, count in delta.items()},
        "reads_per_event": round(sum(c for k, c in delta.items() if k in READS) / n, 2),
        "writes_per_event": round(sum(c for k, c in delta.items() if k in WRITES) / n, 2),
    }
