"""Bounces and complaints read into plain values, and the timeline entries they become.

What arrives at a VERP address is one of: an RFC 3464 delivery status notification
(`multipart/report; report-type=delivery-status`, or RFC 6533's global one), read here with the
standard library's MIME parser because the fields we need (Action, Status, Diagnostic-Code) are
exactly what the bounce libraries throw away; an RFC 5965 abuse report
(`report-type=feedback-report`); or a bounce in one of the older non-standard formats (qmail,
Exim, Exchange, ...), recognised by flufl.bounce. Anything else (an auto-reply sent to the
return path, say) is no report at all.

Nothing read here keeps an address: every diagnostic has its addresses, and the recipient's
known address parts, replaced before it leaves this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.policy import compat32
from typing import Final

from flufl.bounce import all_failures

from worker.contracts.events import (
    ConversationMessage,
    DeliveryReport,
    FailureType,
    ReportSource,
    TimelineEvent,
    TimelineKind,
)
from worker.core.patterns import LinearMatch, LinearPattern
from worker.domain.notifications import derived_event_id

MAX_DIAGNOSTIC: Final = 300
# How much of a diagnostic is read at all: ample for MAX_DIAGNOSTIC characters once masked.
_SCRUBBED_PREFIX: Final = 16 * 1024
ADDRESS_MASK: Final = "<address>"
REDACTED: Final = "<redacted>"
# An address with its angle brackets, if any, so that `<jane@x>` becomes `<address>`.
_ADDRESS: Final = LinearPattern(r"<?[^\s<>()\[\]\"',;:]+@[A-Za-z0-9.\-\[\]]*[A-Za-z0-9\]]>?")
# Bounded quantifiers: at most 15 characters looked at from each position, so linear in `re`.
_IPV4: Final = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_STATUS: Final = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_DIAGNOSTIC_TYPE: Final = re.compile(r"^\s*[A-Za-z][\w.-]*\s*;\s*")
_FAILED_ACTIONS: Final = ("failed", "delayed")
# Address statuses (X.1.x), a disabled mailbox, a domain nobody can route to: the address is
# gone. Class 5 otherwise refuses this message (policy, content, size), not the address.
_ADDRESS_GONE: Final = ("5.2.1", "5.4.4")
_MAILBOX_FULL: Final = ("5.2.2", "5.2.3")


@dataclass(frozen=True, slots=True)
class Bounce:
    source: ReportSource
    failure_type: FailureType
    status: str
    action: str
    diagnostic: str
    # The report names, as the recipient that failed, the address the message was sent to (as
    # `read_report`'s `is_recipient` judged it). Only such a hard bounce suppresses anyone:
    # whoever sees a return path can post a report, but cannot know the address behind it.
    names_recipient: bool = False


RecipientCheck = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Complaint:
    feedback_type: str
    diagnostic: str


Report = Bounce | Complaint


@dataclass(frozen=True, slots=True)
class SentMessage:
    """What we sent under one VERP address: all a bounce of it needs, aliases only."""

    event_id: str  # its NOTIFICATION_SENT or MESSAGE_FORWARDED timeline event
    order_id: str
    store_id: str
    message: ConversationMessage
    expires_at: datetime

    @classmethod
    def of(cls, event: TimelineEvent, expires_at: datetime) -> SentMessage:
        """The record of the message a NOTIFICATION_SENT or MESSAGE_FORWARDED is about."""
        if event.message is None:
            raise ValueError(f"a {event.kind.value} without its message names nothing sent")
        return cls(event.event_id, event.order_id, event.store_id, event.message, expires_at)


def classify(status: str, action: str = "failed") -> FailureType:
    """Hard (the address does not work), soft (it may later) or refused (this message only)."""
    if action == "delayed" or status.startswith("4."):
        return FailureType.SOFT_BOUNCE
    if status in _MAILBOX_FULL:
        return FailureType.SOFT_BOUNCE  # the mailbox exists; it may have room tomorrow
    if status.startswith("5.1.") or status in _ADDRESS_GONE or status == "5.0.0":
        return FailureType.HARD_BOUNCE
    return FailureType.REFUSED


def scrub(text: str, private: Iterable[str] = ()) -> str:
    """`text` on one line, cut short, without addresses, IP addresses or the recipient's address
    parts (a domain with its hosts: `mx2.example.org` goes with `example.org`).

    Bounded whatever `text` holds: only its start is read (what is kept is shorter still), cut
    before the word the cut goes through, and the address pattern is RE2's (`LinearPattern`).
    """
    if len(text) > _SCRUBBED_PREFIX:
        cut = text[:_SCRUBBED_PREFIX]
        if not text[_SCRUBBED_PREFIX].isspace():
            cut = cut[: len(cut.rstrip()) - len(cut.split()[-1])] if cut.split() else ""
        text = cut
    text = _IPV4.sub("<ip>", _ADDRESS.sub(ADDRESS_MASK, text))
    for term in sorted({t.strip().lower() for t in private if len(t.strip()) >= 3}, key=len)[::-1]:
        text = _private_term(term).sub(_keep_edges, text)
        # A match takes the character after it, which may be the one before the next
        # occurrence: a second pass masks what the first one left ("jane jane").
        text = _private_term(term).sub(_keep_edges, text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_DIAGNOSTIC else text[: MAX_DIAGNOSTIC - 1] + "…"


def _private_term(term: str) -> LinearPattern:
    """`term` where it stands alone; a domain with its hosts. RE2 has no lookaround, so the
    characters on either side are matched as groups and given back by `_keep_edges`."""
    hosts = r"(?:[A-Za-z0-9-]+\.)*" if "." in term and "@" not in term else ""
    return LinearPattern(rf"(^|[^\w.+-]){hosts}{re.escape(term)}($|[^\w-])", ignore_case=True)


def _keep_edges(match: LinearMatch) -> str:
    return (match.group(1) or "") + REDACTED + (match.group(2) or "")


def private_terms(real_address: str) -> tuple[str, ...]:
    """The parts of a recipient's address a diagnostic may quote apart (`unknown user: "jane"`)."""
    local, _, domain = real_address.strip().lower().rpartition("@")
    return tuple(t for t in (real_address, local, domain) if t)


def read_report(
    raw: bytes, *, private: Sequence[str] = (), is_recipient: RecipientCheck | None = None
) -> Report | None:
    """The bounce or complaint `raw` carries; None when it is neither (never raises).

    `is_recipient(address)`: whether an address the report names is the one the message went
    to (the caller compares keyed hashes; no address leaves this module).
    """
    check = is_recipient or (lambda _address: False)
    try:
        message = BytesParser(policy=compat32).parsebytes(raw)
        return (
            _feedback_report(message, private)
            or _delivery_status(message, private, check)
            or _non_standard(message, private, check)
        )
    except Exception:  # noqa: BLE001 - the stdlib parser and the detectors raise many types
        return None


def _report_part(message: Message, report_type: str) -> Message | None:
    for part in message.walk():
        if (
            part.get_content_type() == "multipart/report"
            and str(part.get_param("report-type", "")).lower() == report_type
        ):
            return part
    return None


def _feedback_report(message: Message, private: Sequence[str]) -> Complaint | None:
    report = _report_part(message, "feedback-report")
    if report is None:
        return None
    fields = next(
        (
            block
            for part in report.walk()
            if part.get_content_type() == "message/feedback-report"
            for block in _blocks(part)
        ),
        None,
    )
    if fields is None:
        return None
    feedback = (fields.get("Feedback-Type") or "other").strip().lower()
    agent = fields.get("User-Agent")
    return Complaint(
        feedback_type=scrub(feedback, private)[:40],
        diagnostic=scrub(f"reported by {agent}" if agent else "", private),
    )


def _named(field: str | None) -> str:
    """The address of a `Final-Recipient: rfc822; <addr>` field, lower-cased."""
    value = (field or "")[:1024].rpartition(";")[2]
    return value.strip().strip("<>").strip().lower()


def _delivery_status(
    message: Message, private: Sequence[str], is_recipient: RecipientCheck
) -> Bounce | None:
    report = _report_part(message, "delivery-status")
    if report is None:
        return None
    blocks = [
        block
        for part in report.walk()
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status")
        for block in _blocks(part)
    ]
    recipients = [b for b in blocks if b.get("Action") or b.get("Final-Recipient")]
    failed = [b for b in recipients if (b.get("Action") or "").strip().lower() in _FAILED_ACTIONS]
    if not failed:
        return None  # a positive DSN (delivered, relayed), which we never ask for
    # Our messages have one recipient each; a report of several says the worst first.
    block = min(failed, key=lambda b: (b.get("Action") or "").strip().lower() != "failed")
    action = (block.get("Action") or "").strip().lower()
    diagnostic = _DIAGNOSTIC_TYPE.sub("", _unfold(block.get("Diagnostic-Code") or ""))
    status = _status(block.get("Status") or "") or _status(diagnostic)
    status = status or ("4.0.0" if action == "delayed" else "5.0.0")
    named = [_named(block.get(f)) for f in ("Final-Recipient", "Original-Recipient")]
    return Bounce(
        source=ReportSource.DSN,
        failure_type=classify(status, action),
        status=status,
        action=action,
        diagnostic=scrub(diagnostic, private),
        names_recipient=any(address and is_recipient(address) for address in named),
    )


def _non_standard(
    message: Message, private: Sequence[str], is_recipient: RecipientCheck
) -> Bounce | None:
    temporary, permanent = all_failures(message)
    if not temporary and not permanent:
        return None
    failed = permanent or temporary
    action = "failed" if permanent else "delayed"
    text = _text_of(message)
    explanation = _explanation(text, [a.decode("ascii", "replace") for a in failed])
    status = _status(explanation) or _status(text) or ("5.0.0" if permanent else "4.0.0")
    return Bounce(
        source=ReportSource.NON_STANDARD,
        failure_type=classify(status, action),
        status=status,
        action=action,
        diagnostic=scrub(explanation, private),
        names_recipient=any(
            is_recipient(a.decode("ascii", "replace").strip().lower()) for a in failed
        ),
    )


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status or feedback-report part, however it was parsed."""
    payload = part.get_payload()
    if isinstance(payload, str):
        return _parse_blocks(payload)
    blocks = [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
    if part.get_content_type() == "message/delivery-status" or not blocks:
        return blocks
    # message/* types the parser does not know arrive as one message: its headers are the
    # first block and its body the rest, still unparsed.
    rest = blocks[0].get_payload()
    return [blocks[0], *(_parse_blocks(rest) if isinstance(rest, str) else [])]


def _parse_blocks(text: str) -> list[Message]:
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [HeaderParser(policy=compat32).parsestr(chunk) for chunk in chunks if chunk.strip()]


def _status(text: str) -> str | None:
    found = _STATUS.search(text)
    return ".".join(found.groups()) if found else None


def _unfold(value: str) -> str:
    return " ".join(str(value).split())


def _text_of(message: Message) -> str:
    """The first text/plain part a person would read, decoded as well as it can be."""
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload.decode(part.get_content_charset() or "utf-8", "replace")
    return ""


def _explanation(text: str, addresses: Sequence[str]) -> str:
    """The paragraph that names a failed address: where non-standard bounces say why."""
    lowered = [a.lower() for a in addresses]
    paragraphs = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
    for paragraph in paragraphs:
        if any(address in paragraph.lower() for address in lowered):
            return paragraph
    return next((p for p in paragraphs if p.strip()), "")


def smtp_reply_report(reply: str, private: Sequence[str] = ()) -> DeliveryReport:
    """What an upstream's permanent refusal during the SMTP transaction says, as a report."""
    status = _status(reply) or ("5.0.0" if reply.startswith("5") else "4.0.0")
    return DeliveryReport(
        failure_type=classify(status),
        source=ReportSource.SMTP_REPLY,
        status=status,
        action="failed",
        diagnostic=scrub(reply, private),
    )


def failure_event(report: Report, sent: SentMessage, at: datetime) -> TimelineEvent:
    """DELIVERY_FAILED (or COMPLAINT_RECEIVED) on the order of the message the report is about.

    Its id derives from the message and what the report says, so the same report delivered
    twice, or replayed, adds nothing; a later report that says more (failed after delayed) adds.
    """
    if isinstance(report, Complaint):
        kind, what = TimelineKind.COMPLAINT_RECEIVED, f"COMPLAINT/{report.feedback_type}"
        delivery = DeliveryReport(
            failure_type=FailureType.COMPLAINT,
            source=ReportSource.ARF,
            diagnostic=report.diagnostic,
            feedback_type=report.feedback_type,
        )
        reason = f"complaint: {report.feedback_type}"
    else:
        kind, what = TimelineKind.DELIVERY_FAILED, f"BOUNCE/{report.action}/{report.status}"
        delivery = DeliveryReport(
            failure_type=report.failure_type,
            source=report.source,
            status=report.status,
            action=report.action,
            diagnostic=report.diagnostic,
        )
        reason = f"{report.failure_type.value.lower().replace('_', ' ')} {report.status}"
    return TimelineEvent(
        event_id=derived_event_id(sent.event_id, what),
        order_id=sent.order_id,
        store_id=sent.store_id,
        occurred_at=at,
        kind=kind,
        causation_id=sent.event_id,
        message=sent.message.model_copy(update={"reason": reason}),
        delivery=delivery,
    )
