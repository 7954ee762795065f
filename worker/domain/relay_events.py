"""The timeline events the relay produces, built from its decisions: values in, values out.

Every event id derives from its cause, so a retried delivery or a repeated refusal produces the
same id and the projector keeps one entry.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from worker.contracts.events import (
    ConversationMessage,
    Direction,
    Participant,
    ParticipantRole,
    TimelineEvent,
    TimelineKind,
)
from worker.domain.routing import AliasView, Route
from worker.domain.summary import MessageSummary, sha256_hex

_EVENT_NAMESPACE: Final = uuid.UUID("5d0c6a4e-2b1f-5c8e-9a43-7f1e0c2d9b61")
# Refusals of one sender at one alias for one reason count once per window: senders retry, and
# the conversation should show that mail was refused, not every attempt.
REJECTION_WINDOW: Final = timedelta(hours=1)


# MESSAGE_REJECTED entries listed per order per window (the relay process's count).
REJECTIONS_LISTED_PER_ORDER: Final = 5
# Folded refusals recently seen per order and window: a sender retrying the same refused message
# is counted once, as a listed one is. Beyond this many distinct ones in the window each counts.
_RECENT_FOLDED: Final = 16


@dataclass(frozen=True, slots=True)
class Admission:
    """What the relay publishes for one refusal: `event` is the refusal itself when `folded`
    is false, else the window's last listed entry carrying the count of refusals folded in."""

    event: TimelineEvent
    folded: bool


@dataclass(slots=True)
class _Window:
    listed: set[str] = field(default_factory=set)
    last: TimelineEvent | None = None
    folded: int = 0
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)


class RejectionBudget:
    """At most `per_order` distinct MESSAGE_REJECTED per order per REJECTION_WINDOW; the rest
    are counted on the last one listed.

    A repeat of an event already listed (same id: same cause in the same window) is let through
    as it is, since it adds nothing. A refusal past the budget is *folded*: `admit` answers the
    window's last listed entry with `folded_refusals` set to the number folded so far (the same
    event id, so the projector updates that entry instead of adding one). The count is absolute
    and the projector keeps the largest it saw, so a lost or repeated update, or a replay of the
    topic, leaves the same count. Several relay processes each keep their own budget: each
    lists its few entries and counts on its own last one, so the timeline shows them all and the
    counts add up. Memory is bounded: windows of orders seen least recently are forgotten first.
    Pure: it is given the time.
    """

    def __init__(
        self, per_order: int = REJECTIONS_LISTED_PER_ORDER, *, max_orders: int = 100_000
    ) -> None:
        self._per_order = per_order
        self._max_orders = max_orders
        self._windows: OrderedDict[tuple[str, int], _Window] = OrderedDict()

    def admit(self, event: TimelineEvent, *, now: datetime) -> Admission:
        window = int(now.timestamp() // REJECTION_WINDOW.total_seconds())
        key = (event.order_id, window)
        state = self._windows.get(key)
        if state is None:
            state = self._windows[key] = _Window()
            if len(self._windows) > self._max_orders:
                self._windows.popitem(last=False)
        self._windows.move_to_end(key)
        if event.event_id in state.listed:
            return Admission(event, folded=False)
        if len(state.listed) < self._per_order or state.last is None:
            state.listed.add(event.event_id)
            state.last = event
            return Admission(event, folded=False)
        if event.event_id in state.recent:
            state.recent.move_to_end(event.event_id)
        else:
            state.folded += 1
            state.recent[event.event_id] = None
            if len(state.recent) > _RECENT_FOLDED:
                state.recent.popitem(last=False)
        last = state.last.model_copy(update={"folded_refusals": state.folded})
        return Admission(last, folded=True)

    def sealed(self, event: TimelineEvent, *, now: datetime) -> None:
        """`event` is the listed one of the same id, sealed: counts are folded into this one."""
        window = int(now.timestamp() // REJECTION_WINDOW.total_seconds())
        state = self._windows.get((event.order_id, window))
        if state is not None and state.last is not None and state.last.event_id == event.event_id:
            state.last = event


def message_key(raw: bytes, message_id: str | None, *, context: str = "") -> str:
    """What identifies a message across delivery retries: its Message-ID and its content.

    A Message-ID alone is the sender's to choose: a second, different message under a used one
    would take the first one's event id and never be kept. The body's digest (the rewrite leaves
    body bytes untouched, so every retry of one message has the same) tells them apart, while a
    redelivery of the same message keeps its one id. `context`: what else makes it the same
    message (its sender and subject).
    """
    message_id = (message_id or "").strip()
    if not message_id:
        return f"sha256:{sha256_hex(raw)}"
    body = raw.partition(b"\r\n\r\n")[2]
    digest = sha256_hex(context.encode() + b"\n" + body)
    return f"{message_id}|{digest[:32]}"


def forward_event_id(message_key: str, recipient_alias: str) -> str:
    """The timeline event id of one forward, the same on every retry of that delivery."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{message_key}\n{recipient_alias.strip().lower()}"))


def rejection_event_id(recipient_alias: str, sender_key: str, reason: str, at: datetime) -> str:
    """The id of a MESSAGE_REJECTED: its cause (who, to which alias, why) and its window.

    `sender_key` must not be a real address (event ids are shown): a keyed hash of it, say.
    """
    window = int(at.timestamp() // REJECTION_WINDOW.total_seconds())
    cause = f"{recipient_alias.strip().lower()}\n{sender_key}\n{reason}\n{window}"
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"rejected\n{cause}"))


def forwarded(
    route: Route,
    summary: MessageSummary,
    forwarded_bytes: bytes,
    *,
    at: datetime,
    authentication: str | None = None,
) -> TimelineEvent:
    """MESSAGE_FORWARDED for one recipient of a relayed message, with the sender's verdicts."""
    recipient = route.recipient_alias
    key = message_key(
        forwarded_bytes, summary.message_id, context=f"{route.sender_alias}\n{summary.subject}"
    )
    return TimelineEvent(
        event_id=forward_event_id(key, recipient.address),
        order_id=recipient.order_id,
        store_id=recipient.store_id,
        occurred_at=at,
        kind=TimelineKind.MESSAGE_FORWARDED,
        causation_id=summary.message_id or key,
        message=ConversationMessage(
            message_id=summary.message_id or key,
            from_=Participant(
                alias=route.sender_alias, name=route.sender_name, role=route.sender_role
            ),
            to=Participant(
                alias=recipient.address, name=recipient.display_name, role=recipient.role
            ),
            subject=summary.subject,
            first_words=summary.first_words,
            has_attachment=bool(summary.attachment_names),
            attachment_names=list(summary.attachment_names),
            direction=route.direction,
            size_bytes=summary.size_bytes,
            authentication=authentication,
        ),
    )


def rejected(
    recipient: AliasView,
    sender: AliasView | None,
    *,
    sender_key: str,
    reason: str,
    at: datetime,
) -> TimelineEvent:
    """MESSAGE_REJECTED on the recipient alias's order; `sender` when it is a participant."""
    return TimelineEvent(
        event_id=rejection_event_id(recipient.address, sender_key, reason, at),
        order_id=recipient.order_id,
        store_id=recipient.store_id,
        occurred_at=at,
        kind=TimelineKind.MESSAGE_REJECTED,
        causation_id=recipient.address,
        message=ConversationMessage(
            message_id="",
            from_=Participant(
                alias=sender.address if sender else "",
                name=sender.display_name if sender else None,
                role=sender.role if sender else ParticipantRole.EXTERNAL,
            ),
            to=Participant(
                alias=recipient.address, name=recipient.display_name, role=recipient.role
            ),
            subject="",
            first_words="",
            has_attachment=False,
            attachment_names=[],
            direction=Direction(f"TO_{recipient.role.value}"),
            size_bytes=0,
            reason=reason,
        ),
    )
