"""Which fields of a timeline event are a person's, and how they are sealed, opened or erased.

Personal: the customer's display name, a message's subject, first words and attachment names, a
failure's reason and diagnostic (what a receiving server said about the person's mailbox). Store
and carrier data (the store's name, external participants, aliases, kinds, times, statuses,
authentication verdicts) are business data and stay clear. Sealed values are text (`ct-sealed:v1:`
then base64), so the Avro schema keeps its types and the projector stores them as they come,
never needing a key.

A soft alias is the exception among aliases: `john@example.com-<token>.<domain>` holds the
customer's address in readable form, so on an order whose customer alias is soft (`alias=True`)
that alias is personal too and is sealed wherever the event carries it: a CUSTOMER participant's
`alias`, and the causation id of a refusal (the alias it was addressed to). A hard alias is
random and stays clear, as do the store's alias and an external party's (business data).
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


def seal_event(event: TimelineEvent, key: SubjectKey, *, alias: bool = False) -> TimelineEvent:
    """The event with its personal fields sealed under the subject's key (idempotent); with
    `alias` (a soft-masked order) the customer's alias too."""
    if event.subject_id is not None:
        return event
    sealed = _map(event, key.seal_text, alias=key.seal_text if alias else None)
    return sealed.model_copy(update={"subject_id": key.subject_id})


def open_event(event: TimelineEvent, key: SubjectKey | None) -> TimelineEvent:
    """The event as it was written; with no key (the subject was erased) every sealed field
    reads `erased` (a sealed soft alias too) while kind, time, store and the clear aliases
    stay."""
    if event.subject_id is None:
        return event
    if key is None:
        erased = _erased
        return _map(event, erased, alias=erased)
    return _map(event, key.open_text, alias=key.open_text)


def redact_event(event: TimelineEvent, *, alias: bool = False) -> TimelineEvent:
    """The event with nothing personal left: what is recorded once the subject is erased; with
    `alias` (a soft-masked order) the customer's alias reads `erased`."""
    redacted = _map(event, lambda text: "", alias=(lambda text: ERASED) if alias else None)
    return redacted.model_copy(update={"subject_id": ERASED_SUBJECT})


def is_erased(event: TimelineEvent) -> bool:
    return event.subject_id == ERASED_SUBJECT


def personal_texts(event: TimelineEvent, *, alias: bool = False) -> list[str]:
    """The personal values of an event as they stand (sealed or not), to check what is left;
    with `alias` the customer's alias among them."""
    found: list[str] = []

    def collect(text: str) -> str:
        found.append(text)
        return text

    _map(event, collect, alias=collect if alias else None)
    return [t for t in found if t]


def _erased(text: str) -> str:
    return ERASED if is_sealed(text) else text


def _map(event: TimelineEvent, change: Transform, *, alias: Transform | None) -> TimelineEvent:
    """`change` applied to every personal field; `alias` (None: they stay) to the customer's
    alias wherever it stands."""
    update: dict[str, object] = {}
    message = event.message
    failure = event.kind in _FAILURES or event.delivery is not None
    if message is not None:
        customer = _customer_aliases(message)
        # Sealed, a refusal's causation no longer equals its alias (another nonce): sealed is why.
        if alias is not None and (event.causation_id in customer or is_sealed(event.causation_id)):
            update["causation_id"] = alias(event.causation_id)
        fields: dict[str, object] = {
            "from_": _participant(message.from_, change, alias),
            "to": _participant(message.to, change, alias),
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


def _customer_aliases(message: ConversationMessage) -> set[str]:
    return {
        p.alias
        for p in (message.from_, message.to)
        if p.role is ParticipantRole.CUSTOMER and p.alias
    }


def _participant(
    participant: Participant, change: Transform, alias: Transform | None
) -> Participant:
    if participant.role is not ParticipantRole.CUSTOMER:
        return participant
    update: dict[str, object] = {}
    if participant.name:
        update["name"] = change(participant.name) or None
    if alias is not None and participant.alias:
        update["alias"] = alias(participant.alias)
    return participant.model_copy(update=update) if update else participant


def _copy(message: ConversationMessage, fields: dict[str, object]) -> ConversationMessage:
    return message.model_copy(update=fields)
