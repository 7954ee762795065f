"""Which fields of a timeline event are a person's, and how they are sealed, opened or erased.

Personal: the customer's display name, a message's subject, first words and attachment names, a
failure's reason and diagnostic (what a receiving server said about the person's mailbox). Store
and carrier data (the store's name, external participants, aliases, kinds, times, statuses,
authentication verdicts) are business data and stay clear. Sealed values are text (`ct-sealed:v1:`
then base64), so the Avro schema keeps its types and the projector stores them as they come,
never needing a key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from worker.contracts.events import (
    ConversationMessage,
    Participant,
    ParticipantRole,
    TimelineEvent,
    TimelineKind,
)
from worker.core.crypto import SubjectKey, is_sealed

ERASED: Final = "erased"
# The subject id of an event recorded after its subject was erased: nothing personal in it.
ERASED_SUBJECT: Final = "erased"
_FAILURES: Final = frozenset({TimelineKind.DELIVERY_FAILED, TimelineKind.COMPLAINT_RECEIVED})

Transform = Callable[[str], str]


def seal_event(event: TimelineEvent, key: SubjectKey) -> TimelineEvent:
    """The event with its personal fields sealed under the subject's key (idempotent)."""
    if event.subject_id is not None:
        return event
    return _map(event, key.seal_text).model_copy(update={"subject_id": key.subject_id})


def open_event(event: TimelineEvent, key: SubjectKey | None) -> TimelineEvent:
    """The event as it was written; with no key (the subject was erased) every sealed field
    reads `erased` while kind, time, store and aliases stay."""
    if event.subject_id is None:
        return event
    if key is None:
        return _map(event, lambda text: ERASED if is_sealed(text) else text)
    return _map(event, key.open_text)


def redact_event(event: TimelineEvent) -> TimelineEvent:
    """The event with nothing personal left: what is recorded once the subject is erased."""
    return _map(event, lambda text: "").model_copy(update={"subject_id": ERASED_SUBJECT})


def is_erased(event: TimelineEvent) -> bool:
    return event.subject_id == ERASED_SUBJECT


def personal_texts(event: TimelineEvent) -> list[str]:
    """The personal values of an event as they stand (sealed or not), to check what is left."""
    found: list[str] = []

    def collect(text: str) -> str:
        found.append(text)
        return text

    _map(event, collect)
    return [t for t in found if t]


def _map(event: TimelineEvent, change: Transform) -> TimelineEvent:
    update: dict[str, object] = {}
    message = event.message
    failure = event.kind in _FAILURES or event.delivery is not None
    if message is not None:
        fields: dict[str, object] = {
            "from_": _participant(message.from_, change),
            "to": _participant(message.to, change),
            "subject": change(message.subject),
            "first_words": change(message.first_words),
            "attachment_names": [change(n) for n in message.attachment_names],
        }
        if failure and message.reason:
            fields["reason"] = change(message.reason)
        update["message"] = _copy(message, fields)
    if event.delivery is not None and event.delivery.diagnostic:
        update["delivery"] = event.delivery.model_copy(
            update={"diagnostic": change(event.delivery.diagnostic)}
        )
    return event.model_copy(update=update) if update else event


def _participant(participant: Participant, change: Transform) -> Participant:
    if participant.role is not ParticipantRole.CUSTOMER or not participant.name:
        return participant
    return participant.model_copy(update={"name": change(participant.name) or None})


def _copy(message: ConversationMessage, fields: dict[str, object]) -> ConversationMessage:
    return message.model_copy(update=fields)
