"""The HTTP API's documents: camelCase on the wire, as the timeline and the events are.

The conversation follows the shape OMS conversation APIs use (VTEX's GetConversation): messages
with `from`/`to` participants carrying `emailAlias`, `aliasMaskType` and `role`, and the real
`email` only when an admin gave a reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
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


class ConversationOut(Document):
    order_id: str
    store_id: str
    status: str | None
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


class DeadLetterListOut(Document):
    items: list[DeadLetterOut]


class ReplayIn(Document):
    offsets: list[int] = Field(min_length=1, max_length=1000)


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
    detail: dict[str, object]


class AuditListOut(Document):
    items: list[AuditEntryOut]
    next_cursor: str | None


class MeOut(Document):
    name: str
    role: Literal["support", "admin"]
    via: Literal["session", "token"]
