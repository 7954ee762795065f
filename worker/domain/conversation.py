"""An order's timeline as people read it: the progress bar and the conversation thread."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from worker.contracts.events import (
    Direction,
    OrderStatus,
    Participant,
    ParticipantRole,
    TimelineEvent,
    TimelineKind,
)
from worker.domain.aliases import MaskType

JOURNEY: Final = (
    OrderStatus.PAYMENT_APPROVED,
    OrderStatus.HANDLING,
    OrderStatus.INVOICED,
    OrderStatus.SHIPPED,
    OrderStatus.DELIVERED,
)
_HARD_LOCAL = re.compile(r"[0-9a-f]{32}")


class StepState(StrEnum):
    DONE = "done"  # reached, and the order went further
    PASSED = "passed"  # never reported, but the order went further
    CURRENT = "current"
    TODO = "todo"


@dataclass(frozen=True, slots=True)
class Step:
    status: OrderStatus
    state: StepState
    at: datetime | None


class MessageState(StrEnum):
    SENT = "sent"  # a notification the upstream accepted
    FORWARDED = "forwarded"
    REJECTED = "rejected"  # refused by the relay (an expired alias, say)
    FAILED = "failed"  # the upstream refused the notification


_STATE_OF_KIND: Final = {
    TimelineKind.NOTIFICATION_SENT: MessageState.SENT,
    TimelineKind.MESSAGE_FORWARDED: MessageState.FORWARDED,
    TimelineKind.MESSAGE_REJECTED: MessageState.REJECTED,
    TimelineKind.DELIVERY_FAILED: MessageState.FAILED,
}


@dataclass(frozen=True, slots=True)
class Person:
    alias: str
    name: str | None
    role: ParticipantRole
    mask: MaskType | None


@dataclass(frozen=True, slots=True)
class MessageItem:
    event_id: str
    message_id: str
    state: MessageState
    at: datetime
    direction: Direction
    sender: Person
    recipient: Person
    subject: str
    first_words: str
    attachment_names: tuple[str, ...]
    size_bytes: int
    failure: str | None
    # A MESSAGE_REJECTED that stands for this many more refusals (its order's hour), else 0.
    folded_refusals: int = 0

    @property
    def failed(self) -> bool:
        return self.state in (MessageState.REJECTED, MessageState.FAILED)


@dataclass(frozen=True, slots=True)
class StatusItem:
    event_id: str
    status: OrderStatus
    at: datetime


@dataclass(frozen=True, slots=True)
class Conversation:
    messages: tuple[MessageItem, ...]
    status_changes: tuple[StatusItem, ...]
    steps: tuple[Step, ...]
    # Messages and status changes together, oldest first: the thread as the page shows it.
    thread: tuple[MessageItem | StatusItem, ...]

    def aliases(self) -> list[str]:
        seen: dict[str, None] = {}
        for message in self.messages:
            for person in (message.sender, message.recipient):
                if person.alias:
                    seen[person.alias] = None
        return list(seen)


def mask_of(alias: str, domain: str) -> MaskType | None:
    """Which kind of alias an address is, from its form alone; None when it is not one of ours."""
    local, at, alias_domain = alias.strip().lower().rpartition("@")
    domain = domain.lower()
    if not at:
        return None
    if alias_domain == domain and _HARD_LOCAL.fullmatch(local):
        return MaskType.HARD
    if alias_domain.endswith("." + domain):
        return MaskType.SOFT
    return None


def progress(status_changes: Sequence[StatusItem]) -> tuple[Step, ...]:
    """PAYMENT_APPROVED -> ... -> DELIVERED, or the steps reached and then CANCELED."""
    reached: dict[OrderStatus, datetime] = {}
    for change in sorted(status_changes, key=lambda c: c.at):
        reached.setdefault(change.status, change.at)
    journey = [s for s in JOURNEY if s in reached]
    furthest = max((JOURNEY.index(s) for s in journey), default=-1)
    if OrderStatus.CANCELED in reached:
        done = [Step(s, StepState.DONE, reached[s]) for s in journey]
        return (*done, Step(OrderStatus.CANCELED, StepState.CURRENT, reached[OrderStatus.CANCELED]))
    steps = []
    for index, status in enumerate(JOURNEY):
        if index == furthest:
            state = StepState.CURRENT
        elif index < furthest:
            state = StepState.DONE if status in reached else StepState.PASSED
        else:
            state = StepState.TODO
        steps.append(Step(status, state, reached.get(status)))
    return tuple(steps)


def _person(participant: Participant, domain: str) -> Person:
    return Person(
        alias=participant.alias,
        name=participant.name,
        role=participant.role,
        mask=mask_of(participant.alias, domain),
    )


def conversation(entries: Sequence[TimelineEvent], domain: str) -> Conversation:
    """Shape the timeline entries (any order) into the thread, oldest first."""
    messages: list[MessageItem] = []
    changes: list[StatusItem] = []
    for entry in sorted(entries, key=lambda e: (e.occurred_at, e.event_id)):
        if entry.kind is TimelineKind.STATUS_CHANGED and entry.status is not None:
            changes.append(StatusItem(entry.event_id, entry.status, entry.occurred_at))
            continue
        state = _STATE_OF_KIND.get(entry.kind)
        message = entry.message
        if state is None or message is None:
            continue  # a kind newer than this build: the raw timeline still has it
        messages.append(
            MessageItem(
                event_id=entry.event_id,
                message_id=message.message_id,
                state=state,
                at=entry.occurred_at,
                direction=message.direction,
                sender=_person(message.from_, domain),
                recipient=_person(message.to, domain),
                subject=message.subject,
                first_words=message.first_words,
                attachment_names=tuple(message.attachment_names),
                size_bytes=message.size_bytes,
                failure=message.reason,
                folded_refusals=entry.folded_refusals or 0,
            )
        )
    thread: list[MessageItem | StatusItem] = [*messages, *changes]
    thread.sort(key=lambda item: (item.at, item.event_id))
    return Conversation(tuple(messages), tuple(changes), progress(changes), tuple(thread))
