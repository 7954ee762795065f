"""Sealing per data subject: which fields, opened back exactly, `erased` without the key,
wrapped keys across a rotation, and the wire schema's evolution."""

from __future__ import annotations

import io
from typing import Any, cast

import pytest
from fastavro import schemaless_reader

from tests.support.events import timeline_event
from worker.contracts.codec import SingleObjectCodec, load_schema, schemas_dir
from worker.contracts.events import (
    DeliveryReport,
    FailureType,
    ReportSource,
    TimelineEvent,
    TimelineKind,
)
from worker.core.crypto import (
    AddressCipher,
    DecryptError,
    SubjectKey,
    is_sealed,
    unwrap_subject_key,
    wrap_subject_key,
)
from worker.domain.personal import (
    ERASED,
    ERASED_SUBJECT,
    open_event,
    personal_texts,
    redact_event,
    seal_event,
)

CODEC = SingleObjectCodec()
PERSONAL = ("Jane Roe", "Your order", "Hello Jane", "invoice-jane.pdf", "mailbox of jane is full")


def _bounce() -> TimelineEvent:
    event = timeline_event("o-1", kind=TimelineKind.DELIVERY_FAILED)
    assert event.message is not None
    message = event.message.model_copy(
        update={"attachment_names": ["invoice-jane.pdf"], "has_attachment": True,
                "reason": "mailbox of jane is full"}
    )  # fmt: skip
    report = DeliveryReport(
        failure_type=FailureType.SOFT_BOUNCE, source=ReportSource.DSN, status="4.2.2",
        diagnostic="mailbox of jane is full",
    )  # fmt: skip
    return event.model_copy(update={"message": message, "delivery": report})


def _key(subject_id: str = "s-1") -> SubjectKey:
    return SubjectKey(subject_id, SubjectKey.new_key())


def test_sealing_hides_every_personal_field_and_keeps_business_data() -> None:
    event, key = _bounce(), _key()
    sealed = seal_event(event, key)
    wire = CODEC.encode(sealed)
    for text in PERSONAL:
        assert text.encode() not in wire, text
    assert sealed.subject_id == "s-1"
    assert sealed.message is not None and event.message is not None
    assert sealed.message.from_ == event.message.from_  # the store's name stays clear
    assert sealed.message.to.alias == event.message.to.alias
    assert all(is_sealed(t) for t in personal_texts(sealed))
    assert sealed.delivery is not None and sealed.delivery.status == "4.2.2"


def test_a_sealed_event_opens_to_exactly_what_was_written_and_sealing_twice_is_once() -> None:
    event, key = _bounce(), _key()
    sealed = seal_event(event, key)
    assert seal_event(sealed, key) == sealed
    decoded = CODEC.decode(CODEC.encode(sealed), TimelineEvent)
    assert open_event(decoded, key) == event.model_copy(update={"subject_id": "s-1"})


def test_without_the_key_sealed_fields_read_erased_and_kind_time_store_stay() -> None:
    event = _bounce()
    erased = open_event(seal_event(event, _key()), None)
    assert erased.message is not None and erased.delivery is not None
    assert erased.message.to.name == ERASED and erased.message.subject == ERASED
    assert erased.message.attachment_names == [ERASED] and erased.delivery.diagnostic == ERASED
    assert (erased.kind, erased.occurred_at, erased.store_id) == (
        event.kind, event.occurred_at, event.store_id,
    )  # fmt: skip


def test_another_subjects_key_cannot_open_a_field() -> None:
    sealed = seal_event(_bounce(), _key("s-1"))
    with pytest.raises(DecryptError):
        open_event(sealed, _key("s-1"))  # same id, another key: the tag does not verify


def test_a_redacted_event_holds_nothing_personal() -> None:
    redacted = redact_event(_bounce())
    assert redacted.subject_id == ERASED_SUBJECT
    assert personal_texts(redacted) == []
    wire = CODEC.encode(redacted)
    assert not [t for t in PERSONAL if t.encode() in wire]


def test_a_wrapped_subject_key_unwraps_after_the_deployment_key_rotates() -> None:
    old, new = SubjectKey.new_key(), SubjectKey.new_key()
    data_key = SubjectKey.new_key()
    wrapped = wrap_subject_key(AddressCipher([old]), data_key, "s-1")
    rotated = AddressCipher([new, old])
    assert rotated.needs_reencrypt(wrapped)
    assert unwrap_subject_key(rotated, wrapped, "s-1") == data_key
    with pytest.raises(DecryptError):
        unwrap_subject_key(rotated, wrapped, "s-2")  # bound to its subject
    with pytest.raises(DecryptError):
        unwrap_subject_key(AddressCipher([new]), wrapped, "s-1")  # the old key retired


def test_a_sealed_event_is_read_by_a_consumer_on_the_previous_timeline_schema() -> None:
    previous = load_schema(schemas_dir() / "history" / "timeline_event.3.avsc")
    data = CODEC.encode(seal_event(_bounce(), _key()))
    current = CODEC.writer_schema(TimelineEvent)
    record = cast(
        dict[str, Any], schemaless_reader(io.BytesIO(data[10:]), current.parsed, previous.parsed)
    )
    assert "subjectId" not in record and is_sealed(record["message"]["subject"])


SOFT_CUSTOMER = "jane.roe@example.org-207700027841b.ct.example.com"
SOFT_STORE = "orders@shop.example.com-207700027841b.ct.example.com"


def _soft(kind: TimelineKind = TimelineKind.MESSAGE_FORWARDED) -> TimelineEvent:
    """A reply of a soft-masked order's customer to its store: both aliases readable."""
    event = timeline_event("o-soft", kind=kind)
    assert event.message is not None
    message = event.message.model_copy(
        update={
            "from_": event.message.to.model_copy(update={"alias": SOFT_CUSTOMER}),
            "to": event.message.from_.model_copy(update={"alias": SOFT_STORE}),
        }
    )
    return event.model_copy(update={"message": message})


def test_a_soft_customer_alias_is_sealed_with_the_rest_and_the_stores_stays_clear() -> None:
    event, key = _soft(), _key()
    sealed = seal_event(event, key, alias=True)
    wire = CODEC.encode(sealed)
    for trace in (SOFT_CUSTOMER, "jane.roe", "example.org-207700027841b"):
        assert trace.encode() not in wire, trace
    assert sealed.message is not None
    assert is_sealed(sealed.message.from_.alias) and sealed.message.to.alias == SOFT_STORE
    assert is_sealed(sealed.message.from_.name)
    assert SOFT_CUSTOMER not in personal_texts(sealed, alias=True)
    assert all(is_sealed(t) for t in personal_texts(sealed, alias=True))
    opened = open_event(CODEC.decode(wire, TimelineEvent), key)
    assert opened == event.model_copy(update={"subject_id": "s-1"})
    assert seal_event(sealed, key, alias=True) == sealed


def test_without_alias_a_customer_alias_stays_clear_as_a_hard_one_does() -> None:
    sealed = seal_event(_soft(), _key())
    assert sealed.message is not None and sealed.message.from_.alias == SOFT_CUSTOMER


def test_an_erased_soft_alias_reads_erased_and_a_refusals_causation_with_it() -> None:
    event = _soft(TimelineKind.MESSAGE_REJECTED)
    assert event.message is not None
    refusal = event.model_copy(
        update={
            "causation_id": SOFT_CUSTOMER,
            "message": event.message.model_copy(
                update={"from_": event.message.to, "to": event.message.from_}
            ),
        }
    )
    key = _key()
    sealed = seal_event(refusal, key, alias=True)
    assert is_sealed(sealed.causation_id)
    assert open_event(sealed, key) == refusal.model_copy(update={"subject_id": "s-1"})
    erased = open_event(sealed, None)
    assert erased.message is not None
    assert (erased.causation_id, erased.message.to.alias) == (ERASED, ERASED)
    assert erased.message.from_.alias == SOFT_STORE  # the store's alias is business data


def test_an_event_recorded_after_erasure_holds_no_soft_alias() -> None:
    redacted = redact_event(_soft(), alias=True)
    wire = CODEC.encode(redacted)
    assert b"jane.roe" not in wire and redacted.subject_id == ERASED_SUBJECT
    assert redacted.message is not None and redacted.message.from_.alias == ERASED
    assert personal_texts(redacted, alias=True) == [ERASED]
    assert open_event(redacted, None) == redacted
