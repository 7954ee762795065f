"""The database commands a worker sends, counted by the client (PyMongo's command monitoring)."""

from __future__ import annotations

from collections import Counter
from functools import partial

import pytest
from pymongo import AsyncMongoClient, monitoring

from worker.adapters import mongo


class Commands(monitoring.CommandListener):
    """The commands sent, by (command, collection)."""

    def __init__(self) -> None:
        self.sent: Counter[tuple[str, str]] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        collection = event.command.get(event.command_name)
        self.sent[event.command_name, collection if isinstance(collection, str) else ""] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def of(self, *commands: str) -> dict[tuple[str, str], int]:
        return {k: n for k, n in self.sent.items() if k[0] in commands}

    def writes(self) -> dict[tuple[str, str], int]:
        return self.of("insert", "update", "delete")

    def reads(self) -> int:
        return sum(self.of("find", "aggregate", "count").values())


def counted(monkeypatch: pytest.MonkeyPatch) -> Commands:
    """Every client `mongo.connect` makes from now on (this test's workers) reports here."""
    commands = Commands()
    client = partial(AsyncMongoClient, event_listeners=[commands])
    monkeypatch.setattr(mongo, "AsyncMongoClient", client)
    return commands
