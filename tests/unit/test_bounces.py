"""Bounces and complaints read into values without a single address; their timeline entries.

The two Postfix fixtures are real DSNs of Debian's Postfix (tests/support/postfix.py made them:
an unknown local user, and a mailbox provider answering 452 4.2.2), the others follow the formats
of qmail (QSBMF), Exim, RFC 5965 and RFC 6533.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.hostile import dsn
from worker.contracts.events import (
    ConversationMessage,
    Direction,
    FailureType,
    Participant,
    ParticipantRole,
    ReportSource,
    TimelineKind,
)
from worker.domain.bounces import (
    Bounce,
    Complaint,
    SentMessage,
    classify,
    failure_event,
    private_terms,
    read_report,
    scrub,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bounces"
JANE = private_terms("jane.roe@example.org")
AT = datetime(2026, 11, 2, 12, 5, tzinfo=UTC)
ANY_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")


def _read(name: str, private: tuple[str, ...] = JANE) -> Bounce | Complaint | None:
    return read_report((FIXTURES / name).read_bytes(), private=private)


@pytest.mark.parametrize(
    ("name", "private", "source", "failure", "status", "action", "says"),
    [
        ("postfix-unknown-user.eml", private_terms("nouser@mailbox.test"), ReportSource.DSN,
         FailureType.HARD_BOUNCE, "5.1.1", "failed", 'unknown user: "<redacted>"'),
        ("postfix-mailbox-full-delayed.eml", private_terms("rafael.souza@full.test"),
         ReportSource.DSN, FailureType.SOFT_BOUNCE, "4.2.2", "delayed", "Mailbox full"),
        ("global-dsn-refused.eml", JANE, ReportSource.DSN, FailureType.REFUSED, "5.7.1",
         "failed", "rejected as spam"),
        ("qmail-no-mailbox.eml", JANE, ReportSource.NON_STANDARD, FailureType.HARD_BOUNCE,
         "5.1.1", "failed", "no mailbox here by that name"),
        ("exim-user-unknown.eml", JANE, ReportSource.NON_STANDARD, FailureType.HARD_BOUNCE,
         "5.1.1", "failed", "User unknown"),
    ],
)  # fmt: skip
def test_bounces_are_read_with_their_status_and_no_address(  # noqa: PLR0917
    name: str,
    private: tuple[str, ...],
    source: ReportSource,
    failure: FailureType,
    status: str,
    action: str,
    says: str,
) -> None:
    report = _read(name, private)
    assert isinstance(report, Bounce)
    assert (report.source, report.failure_type, report.status, report.action) == (
        source, failure, status, action,
    )  # fmt: skip
    assert says in report.diagnostic
    assert not ANY_ADDRESS.search(report.diagnostic)
    for term in private:
        assert term not in report.diagnostic.lower()


def test_a_recipients_mail_host_and_ip_are_not_kept() -> None:
    report = _read("exim-user-unknown.eml")
    assert report is not None
    assert "mx2.example.org" not in report.diagnostic and "192.0.2.25" not in report.diagnostic


def test_an_abuse_report_is_a_complaint() -> None:
    report = _read("arf-abuse.eml")
    assert report == Complaint(feedback_type="abuse", diagnostic="reported by SomeGenerator/1.0")


@pytest.mark.parametrize("name", ["vacation-reply.eml", "dsn-delivered.eml"])
def test_mail_that_reports_no_failure_is_no_report(name: str) -> None:
    assert _read(name) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff garbage",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x",
        b"Content-Type: multipart/report; report-type=feedback-report\r\n\r\nno parts",
    ],
)
def test_malformed_input_is_no_report_and_never_raises(raw: bytes) -> None:
    assert read_report(raw) is None


@pytest.mark.parametrize(
    ("status", "action", "expected"),
    [
        ("5.1.1", "failed", FailureType.HARD_BOUNCE),
        ("5.1.10", "failed", FailureType.HARD_BOUNCE),
        ("5.2.1", "failed", FailureType.HARD_BOUNCE),
        ("5.4.4", "failed", FailureType.HARD_BOUNCE),
        ("5.2.2", "failed", FailureType.SOFT_BOUNCE),
        ("4.2.2", "failed", FailureType.SOFT_BOUNCE),
        ("5.1.1", "delayed", FailureType.SOFT_BOUNCE),
        ("5.7.1", "failed", FailureType.REFUSED),
        ("5.3.4", "failed", FailureType.REFUSED),
    ],
)
def test_classify_suppresses_only_for_addresses_that_do_not_work(
    status: str, action: str, expected: FailureType
) -> None:
    assert classify(status, action) is expected


def test_scrub_keeps_the_words_and_drops_the_person() -> None:
    text = "550 5.1.1 <Jane.Roe@Example.org>: no such user jane.roe at mx.example.org (10.1.2.3)"
    assert scrub(text, JANE) == (
        "550 5.1.1 <address>: no such user <redacted> at <redacted> (<ip>)"
    )
    assert len(scrub("x" * 1000)) == 300


def _sent(direction: Direction = Direction.TO_CUSTOMER) -> SentMessage:
    return SentMessage(
        event_id=str(uuid.uuid4()),
        order_id="o-1",
        store_id="store-1",
        message=ConversationMessage(
            message_id="<ct-1@ct.example.com>",
            from_=Participant(alias="s@ct.example.com", name="Shop", role=ParticipantRole.STORE),
            to=Participant(alias="c@ct.example.com", name="Jane", role=ParticipantRole.CUSTOMER),
            subject="Your order shipped",
            first_words="Hello Jane",
            has_attachment=False,
            attachment_names=[],
            direction=direction,
            size_bytes=1000,
        ),
        expires_at=AT,
    )


def test_a_bounce_becomes_delivery_failed_caused_by_the_message_it_is_about() -> None:
    sent = _sent()
    report = _read("postfix-unknown-user.eml", private_terms("nouser@mailbox.test"))
    assert isinstance(report, Bounce)
    event = failure_event(report, sent, AT)
    assert event.kind is TimelineKind.DELIVERY_FAILED
    assert (event.order_id, event.store_id, event.causation_id) == ("o-1", "store-1", sent.event_id)
    assert event.delivery is not None and event.delivery.status == "5.1.1"
    assert event.delivery.failure_type is FailureType.HARD_BOUNCE
    assert event.message is not None and event.message.reason == "hard bounce 5.1.1"
    assert event.message.direction is Direction.TO_CUSTOMER
    # The same report again (a duplicate, a replay) is the same entry; another one is not.
    assert failure_event(report, sent, datetime.now(UTC)).event_id == event.event_id
    soft = _read("postfix-mailbox-full-delayed.eml", private_terms("rafael.souza@full.test"))
    assert isinstance(soft, Bounce)
    assert failure_event(soft, sent, AT).event_id != event.event_id


def test_a_complaint_is_its_own_kind_with_the_feedback_type() -> None:
    sent = _sent(Direction.TO_STORE)
    complaint = _read("arf-abuse.eml")
    assert isinstance(complaint, Complaint)
    event = failure_event(complaint, sent, AT)
    assert event.kind is TimelineKind.COMPLAINT_RECEIVED
    assert event.delivery is not None and event.delivery.feedback_type == "abuse"
    assert event.delivery.failure_type is FailureType.COMPLAINT
    assert event.message is not None and event.message.direction is Direction.TO_STORE


def test_a_report_names_the_recipient_only_when_its_final_recipient_is_the_address_sent_to() -> (
    None
):
    sent_to = "jane.roe@example.org"

    def is_recipient(address: str) -> bool:
        return address == sent_to

    genuine = read_report(
        dsn("b@x.test", f"<{sent_to.upper()}>".lower()), is_recipient=is_recipient
    )
    forged = read_report(dsn("b@x.test", "other@example.org"), is_recipient=is_recipient)
    assert isinstance(genuine, Bounce) and genuine.names_recipient
    assert isinstance(forged, Bounce) and not forged.names_recipient
    assert forged.failure_type is FailureType.HARD_BOUNCE  # recorded, but suppresses nobody
