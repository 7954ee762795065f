"""An order's conversation for people and other programs: the public read API and `ct timeline`.

from worker.services.timeline import get_timeline
entries = await get_timeline(client["conversation_tracker"], "order-1001", subjects)

The reading itself is the orders adapter's (worker/adapters/orders.py); this module is what
other programs import, and how the command line shows the entries. Personal fields are stored
sealed per data subject: given `subjects` (`Stores(...).subjects`, which holds the deployment
key) they are opened, an erased person's reading `erased`; without it they come as stored
(`ct-sealed:v1:...`).
"""

from __future__ import annotations

import json

from worker.adapters.mongo import Database
from worker.adapters.orders import read_timeline
from worker.contracts.events import TimelineEvent
from worker.services.subjects import Subjects

__all__ = ["format_table", "get_timeline", "timeline_json"]

COLUMNS = ("time (UTC)", "kind", "direction", "from", "to", "subject / status", "first words")
WIDTHS = (19, 17, 11, 24, 24, 28, 40)


async def get_timeline(
    db: Database, order_id: str, subjects: Subjects | None = None
) -> list[TimelineEvent] | None:
    """The order's timeline entries, oldest first, opened; None when the order has none."""
    entries = await read_timeline(db, order_id)
    if entries is None or subjects is None:
        return entries
    return await subjects.open(entries)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _row(entry: TimelineEvent) -> tuple[str, ...]:
    message = entry.message
    who = (
        (lambda p: f"{p.name or ''} <{p.alias}>".strip() if p.alias else (p.name or ""))
        if message
        else None
    )
    return (
        entry.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
        entry.kind.value,
        message.direction.value.removeprefix("TO_").lower() if message else "",
        who(message.from_) if who and message else "",
        who(message.to) if who and message else "",
        message.subject if message else (entry.status.value if entry.status else ""),
        _detail(entry),
    )


def _detail(entry: TimelineEvent) -> str:
    """What went wrong for a failure (`hard bounce 5.1.1: unknown user`), else the first words;
    a MESSAGE_REJECTED that stands for more refusals says how many (`(+12 more refused) ...`)."""
    report, message = entry.delivery, entry.message
    if report is not None:
        what = " ".join(
            part
            for part in (report.failure_type.value.lower().replace("_", " "), report.status,
                         report.feedback_type)
            if part
        )  # fmt: skip
        return f"{what}: {report.diagnostic}" if report.diagnostic else what
    if message is None:
        return ""
    detail = message.reason or message.first_words
    if entry.folded_refusals:  # first: the column is cut at its width
        return f"(+{entry.folded_refusals} more refused) {detail}"
    return detail


def format_table(order_id: str, entries: list[TimelineEvent]) -> str:
    lines = [f"Order {order_id}: {len(entries)} timeline entries", ""]
    lines.append("  ".join(c.ljust(w) for c, w in zip(COLUMNS, WIDTHS, strict=True)))
    lines.append("  ".join("-" * w for w in WIDTHS))
    for entry in entries:
        cells = _row(entry)
        lines.append(
            "  ".join(_cut(c, w).ljust(w) for c, w in zip(cells, WIDTHS, strict=True)).rstrip()
        )
    return "\n".join(lines)


def timeline_json(entries: list[TimelineEvent]) -> str:
    return json.dumps(
        [e.model_dump(by_alias=True, mode="json") for e in entries], indent=2, ensure_ascii=False
    )
