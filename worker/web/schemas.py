"""The HTTP API's documents: camelCase on the wire, as the timeline and the events are.

The conversation follows the shape OMS conversation APIs use (VTEX's GetConversation): messages
with `from`/`to` participants carrying `emailAlias`, `aliasMaskType` and `role`, and the real
`email` only when an admin gave a reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from annotated_types import Ge, Le
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from worker.contracts.events import Direction, OrderStatus, ParticipantRole
from worker.domain.aliases import AliasExpiry, MaskType
from worker.domain.conversation import MessageState, StepState


class Document(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True, extra="forbid"
    )


class ProblemOut(Document):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str


class ParticipantOut(Document):
    name: str | None
    email_alias: str
    alias_mask_type: MaskType | None
    role: ParticipantRole
    email: str | None = Field(
        default=None, description="the real address: only with ?reason= and the admin role"
    )


class MessageOut(Document):
    id: str = Field(description="the timeline event id; opens the message at /messages/{id}")
    message_id: str
    state: MessageState
    date: datetime
    direction: Direction
    subject: str
    first_words: str
    body: str | None = Field(description="the whole text, when the message is kept")
    body_kept: bool
    has_attachment: bool
    attachment_names: list[str]
    size_bytes: int
    failure_reason: str | None
    folded_refusals: int = Field(
        0,
        description="a rejected message only: how many more refusals of this order in the same "
        "hour it stands for (not listed one by one)",
    )
    from_: ParticipantOut = Field(alias="from")
    to: list[ParticipantOut]


class StatusChangeOut(Document):
    id: str
    status: OrderStatus
    date: datetime


class StepOut(Document):
    status: OrderStatus
    state: StepState
    date: datetime | None


class SuppressionOut(Document):
    status: str = Field(description="the hard bounce's status code, e.g. 5.1.1")
    since: datetime
    scope: str = Field(description="`order`, or `store`: every order of the store")


class ConversationOut(Document):
    order_id: str
    store_id: str
    status: str | None
    customer_suppressed: SuppressionOut | None = Field(
        None,
        description="set while the customer is not emailed: their address bounced hard "
        "(`ct alias unsuppress` lifts it)",
    )
    unmasked: bool
    progress: list[StepOut]
    messages: list[MessageOut] = Field(description="oldest first, failed ones included")
    status_changes: list[StatusChangeOut]
    failures: list[MessageOut] = Field(description="the rejected and failed messages")


class OrderOut(Document):
    order_id: str
    store_id: str
    status: str | None
    status_at: datetime | None
    updated_at: datetime | None
    entry_count: int


class OrderListOut(Document):
    items: list[OrderOut]
    next_cursor: str | None


class AttachmentOut(Document):
    index: int
    filename: str
    content_type: str
    size_bytes: int
    url: str


class MessageDetailOut(Document):
    id: str
    subject: str
    from_: str = Field(alias="from")
    to: str
    cc: str
    date: str
    text: str | None
    html: str | None = Field(description="sanitised with nh3; remote images removed")
    blocked_images: int
    attachments: list[AttachmentOut]


class StoreSettingsIn(Document):
    mask_type: MaskType
    alias_expiry: AliasExpiry


class StoreSettingsOut(Document):
    store_id: str
    mask_type: MaskType
    alias_expiry: AliasExpiry
    updated_at: datetime | None
    updated_by: str | None
    warning: str | None


class DeadLetterOut(Document):
    offset: int
    at: datetime | None
    component: str
    origin_topic: str
    origin_partition: int
    origin_offset: int
    reason: str
    replayed_at: datetime | None
    replayed_by: str | None
    store_id: str | None = Field(description="the store its record names; null: unreadable")


class DeadLetterListOut(Document):
    items: list[DeadLetterOut]


def _number_not_bool_or_text(value: object) -> object:
    """JSON `false` or `"0"` is no offset: pydantic's lax mode would read both as 0. A float
    without a fraction stays, as JSON Schema counts 8154.0 an integer too."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("an offset is a JSON number, not a boolean or a string")  # noqa: TRY004 - pydantic turns ValueError into a 422
    return value


# At most 2^53 - 1: JSON numbers above it are not exact in most clients (and validators).
Offset = Annotated[int, Ge(0), Le(2**53 - 1), BeforeValidator(_number_not_bool_or_text)]


class ReplayIn(Document):
    offsets: list[Offset] = Field(min_length=1, max_length=1000)


class SubjectRequestIn(Document):
    email: str = Field(min_length=3, max_length=320, description="the customer's real address")
    reason: str = Field(min_length=1, max_length=500, description="the request: audited")


class SubjectErasureOut(Document):
    subject: str = Field(description="the keyed hash of the address: what the audit log holds")
    erased: bool = Field(description="false when there was nothing left to erase")
    keys_destroyed: int
    aliases: int
    orders: int
    messages_deleted: int
    suppressions_lifted: int


class ReplayOut(Document):
    replayed: list[int]
    not_found: list[int]


class AuditEntryOut(Document):
    id: str
    at: datetime
    action: str
    operator: str
    reason: str | None
    order_id: str | None
    alias: str | None
    store_id: str | None = Field(description="the store it concerns; null: no store")
    detail: dict[str, object]


class AuditListOut(Document):
    items: list[AuditEntryOut]
    next_cursor: str | None


class MeOut(Document):
    name: str
    role: Literal["support", "admin"]
    via: Literal["session", "token"]
    stores: list[str] | None = Field(description="the stores it may see; null: every store")
