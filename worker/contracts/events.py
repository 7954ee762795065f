"""The public event contracts as typed models, mirroring `schemas/*.avsc` field for field.

Avro records decode into these at the edge (worker.contracts.codec); the domain and the services
only ever see models. Python names are snake_case; the wire and MongoDB use the schemas'
camelCase names.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


def _utc_millis(value: datetime) -> datetime:
    """Avro timestamp-millis and BSON dates hold milliseconds in UTC: normalise to exactly that."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


UtcMillis = Annotated[datetime, AfterValidator(_utc_millis)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]


class Contract(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore"
    )

    def to_record(self) -> dict[str, Any]:
        """The Avro/MongoDB shape: camelCase names, enums as their symbols."""
        return self.model_dump(by_alias=True, mode="python")


class OrderStatus(StrEnum):
    PAYMENT_APPROVED = "PAYMENT_APPROVED"
    HANDLING = "HANDLING"
    INVOICED = "INVOICED"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"


class TimelineKind(StrEnum):
    STATUS_CHANGED = "STATUS_CHANGED"
    NOTIFICATION_SENT = "NOTIFICATION_SENT"
    MESSAGE_FORWARDED = "MESSAGE_FORWARDED"
    MESSAGE_REJECTED = "MESSAGE_REJECTED"
    DELIVERY_FAILED = "DELIVERY_FAILED"
    COMPLAINT_RECEIVED = "COMPLAINT_RECEIVED"
    UNKNOWN = "UNKNOWN"


class ParticipantRole(StrEnum):
    CUSTOMER = "CUSTOMER"
    STORE = "STORE"
    EXTERNAL = "EXTERNAL"


class Direction(StrEnum):
    TO_CUSTOMER = "TO_CUSTOMER"
    TO_STORE = "TO_STORE"
    TO_EXTERNAL = "TO_EXTERNAL"


class FailureType(StrEnum):
    HARD_BOUNCE = "HARD_BOUNCE"  # the address does not work: its order's mail is suppressed
    SOFT_BOUNCE = "SOFT_BOUNCE"  # it may work later: mailbox full, server down
    REFUSED = "REFUSED"  # this message was refused for good (policy, content), not the address
    COMPLAINT = "COMPLAINT"  # the recipient reported the message as spam (RFC 5965)
    SUPPRESSED = "SUPPRESSED"  # not sent: the address bounced hard before
    UNKNOWN = "UNKNOWN"


class ReportSource(StrEnum):
    DSN = "DSN"  # RFC 3464 delivery status notification
    NON_STANDARD = "NON_STANDARD"  # another bounce format (flufl.bounce)
    ARF = "ARF"  # RFC 5965 abuse report
    SMTP_REPLY = "SMTP_REPLY"  # the upstream refused during the SMTP transaction
    SUPPRESSION = "SUPPRESSION"
    UNKNOWN = "UNKNOWN"


class Customer(Contract):
    email: NonEmpty
    first_name: str
    last_name: str
    locale: str | None = None

    @property
    def full_name(self) -> str:
        """'First Last': how every email, alias and timeline entry names the customer."""
        return f"{self.first_name} {self.last_name}".strip()


class Store(Contract):
    name: str
    email: NonEmpty
    locale: str | None = None


class Item(Contract):
    name: str
    quantity: int = Field(ge=0)


class OrderStatusChanged(Contract):
    event_id: NonEmpty
    order_id: NonEmpty
    store_id: NonEmpty
    occurred_at: UtcMillis
    status: OrderStatus
    customer: Customer
    store: Store
    total_value: int | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    invoice_number: str | None = None
    invoice_url: str | None = None
    tracking_carrier: str | None = None
    tracking_code: str | None = None
    tracking_url: str | None = None
    items: list[Item] | None = None


class Participant(Contract):
    alias: str
    name: str | None = None
    role: ParticipantRole


class ConversationMessage(Contract):
    message_id: str
    from_: Participant = Field(alias="from")
    to: Participant
    subject: str
    first_words: str
    has_attachment: bool
    attachment_names: list[str]
    direction: Direction
    size_bytes: int
    reason: str | None = None
    # The relay's SPF/DKIM/DMARC verdicts for this message, e.g. "spf=pass(...) dkim=... dmarc=...".
    authentication: str | None = None


class DeliveryReport(Contract):
    failure_type: FailureType
    source: ReportSource
    status: str | None = None
    action: str | None = None
    diagnostic: str = ""
    feedback_type: str | None = None


class TimelineEvent(Contract):
    event_id: NonEmpty
    order_id: NonEmpty
    store_id: NonEmpty
    occurred_at: UtcMillis
    kind: TimelineKind
    causation_id: str
    status: OrderStatus | None = None
    message: ConversationMessage | None = None
    delivery: DeliveryReport | None = None
    # Whose key sealed the personal fields (worker/domain/personal.py); None: nothing sealed.
    subject_id: str | None = None
    # MESSAGE_REJECTED only: the refusals folded into this entry past the listed few (see
    # worker/domain/relay_events.RejectionBudget); None: none.
    folded_refusals: int | None = Field(default=None, ge=0)
