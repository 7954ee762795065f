"""Merging timeline entries into an order's projection: the pure heart of the projector.

Entries are the events' camelCase records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.contracts.events import TimelineEvent, TimelineKind

Entry = dict[str, Any]


def entry_of(event: TimelineEvent) -> Entry:
    return event.to_record()


def _order(entry: Entry) -> tuple[datetime, str]:
    return entry["occurredAt"], entry["eventId"]


@dataclass(frozen=True)
class OrderProjection:
    """The fields of an order document that the projector owns, in the order it writes them."""

    store_id: str
    timeline: list[Entry]
    status: str | None
    status_at: datetime | None
    updated_at: datetime

    def fields(self) -> dict[str, Any]:
        return {
            "storeId": self.store_id,
            "timeline": self.timeline,
            "entryCount": len(self.timeline),
            "status": self.status,
            "statusAt": self.status_at,
            "updatedAt": self.updated_at,
        }


def merge(existing: Sequence[Entry], incoming: Iterable[TimelineEvent]) -> OrderProjection | None:
    """Add the events not yet on the timeline; None when nothing changes (a replay or duplicate).

    An event already on the timeline changes nothing, except a larger `foldedRefusals` (the
    relay's count of refusals folded into its last listed MESSAGE_REJECTED): the entry keeps the
    largest count seen. Everything returned is a function of the set of events, never of arrival
    order or of the clock, so replaying a topic rebuilds byte-for-byte the same document.
    """
    timeline = {e["eventId"]: e for e in existing}
    changed = False
    for event in incoming:
        entry = timeline.get(event.event_id)
        if entry is None:
            timeline[event.event_id] = entry_of(event)
            changed = True
        elif (event.folded_refusals or 0) > (entry.get("foldedRefusals") or 0):
            timeline[event.event_id] = {**entry, "foldedRefusals": event.folded_refusals}
            changed = True
    if not changed:
        return None
    entries = sorted(timeline.values(), key=_order)
    status_changes = [
        e for e in entries if e["kind"] == TimelineKind.STATUS_CHANGED and e["status"]
    ]
    latest = max(status_changes, key=_order) if status_changes else None
    return OrderProjection(
        store_id=entries[0]["storeId"],
        timeline=entries,
        status=latest["status"] if latest else None,
        status_at=latest["occurredAt"] if latest else None,
        updated_at=entries[-1]["occurredAt"],
    )
