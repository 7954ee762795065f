"""The HTTP API under /api: bearer tokens, JSON in and out, problem+json on every refusal."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from worker.adapters.stores import StoreSetting
from worker.contracts.events import OrderStatus
from worker.domain.accounts import Role
from worker.domain.aliases import SOFT_MASK_WARNING, MaskType
from worker.domain.conversation import MessageItem, Person
from worker.domain.mime_view import MessageView, plain_text
from worker.services.accounts import Principal
from worker.services.console import OrderPage
from worker.web.downloads import attachment_response
from worker.web.problems import PROBLEM_JSON, forbidden
from worker.web.schemas import (
    AttachmentOut,
    AuditEntryOut,
    AuditListOut,
    ConversationOut,
    DeadLetterListOut,
    DeadLetterOut,
    MeOut,
    MessageDetailOut,
    MessageOut,
    OrderListOut,
    OrderOut,
    ParticipantOut,
    ProblemOut,
    ReplayIn,
    ReplayOut,
    StatusChangeOut,
    StepOut,
    StoreSettingsIn,
    StoreSettingsOut,
    SubjectErasureOut,
    SubjectRequestIn,
    SuppressionOut,
)
from worker.web.security import api_principal, api_role, console_of

_problem: dict[str, Any] = {"model": ProblemOut, "content": {PROBLEM_JSON: {}}}
# Routes that take a body can also answer 400 (a body that is not JSON) and 413 (too large).
_BODY_PROBLEMS: dict[int | str, dict[str, Any]] = {400: _problem, 413: _problem}
router = APIRouter(
    prefix="/api",
    responses={401: _problem, 403: _problem, 404: _problem, 422: _problem},
)
Support = Annotated[Principal, Depends(api_role(Role.SUPPORT))]
Admin = Annotated[Principal, Depends(api_role(Role.ADMIN))]
OrderId = Annotated[str, Path(alias="orderId", min_length=1, max_length=256)]
MessageId = Annotated[str, Path(alias="messageId", min_length=1, max_length=256)]
StoreId = Annotated[str, Path(alias="storeId", min_length=1, max_length=256)]


def _participant(person: Person, revealed: dict[str, str]) -> ParticipantOut:
    return ParticipantOut(
        name=person.name,
        email_alias=person.alias,
        alias_mask_type=person.mask,
        role=person.role,
        email=revealed.get(person.alias),
    )


def _message(item: MessageItem, page: OrderPage, views: dict[str, MessageView]) -> MessageOut:
    view = views.get(item.event_id)
    return MessageOut(
        id=item.event_id,
        message_id=item.message_id,
        state=item.state,
        date=item.at,
        direction=item.direction,
        subject=item.subject,
        first_words=item.first_words,
        body=plain_text(view) if view else None,
        body_kept=item.event_id in page.kept,
        has_attachment=bool(item.attachment_names),
        attachment_names=list(item.attachment_names),
        size_bytes=item.size_bytes,
        failure_reason=item.failure,
        folded_refusals=item.folded_refusals,
        from_=_participant(item.sender, page.revealed),
        to=[_participant(item.recipient, page.revealed)],
    )


@router.get("/me", summary="Who this token belongs to")
async def me(principal: Support) -> MeOut:
    return MeOut(
        name=principal.name,
        role=principal.role.value,
        via="token",
        stores=principal.scope.listed(),
    )


@router.get("/orders", summary="Search orders by id, alias, store or status, newest first")
async def orders(
    request: Request,
    *,
    principal: Support,
    store_id: Annotated[str | None, Query(alias="storeId", max_length=256)] = None,
    status: OrderStatus | None = None,
    q: Annotated[
        str | None, Query(max_length=320, description="order id, its start, or an alias")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
) -> OrderListOut:
    found, next_cursor = await console_of(request).orders.search(
        scope=principal.scope,
        store_id=store_id,
        status=status.value if status else None,
        text=q,
        cursor=cursor,
        limit=limit,
    )
    return OrderListOut(
        items=[OrderOut.model_validate(o, from_attributes=True) for o in found],
        next_cursor=next_cursor,
    )


@router.get(
    "/orders/{orderId}/conversation",
    summary="An order's messages, status changes and failures, oldest first",
    description="Real addresses only with `reason` and the admin role; every unmasking and "
    "every opening of kept message bodies is written to the audit log.",
)
async def order_conversation(
    request: Request,
    principal: Support,
    order_id: OrderId,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> ConversationOut:
    console = console_of(request)
    page = await console.order_page(order_id, principal)
    if reason is not None:
        if not principal.may(Role.ADMIN):
            raise forbidden("real addresses are for the admin role only")
        page = await console.unmask(page, principal, reason)
    views = await console.message_bodies(page, principal)
    thread = page.conversation
    messages = [_message(m, page, views) for m in thread.messages]
    return ConversationOut(
        order_id=page.order.order_id,
        store_id=page.order.store_id,
        status=page.order.status,
        customer_suppressed=(
            SuppressionOut(
                status=page.suppressed.status,
                since=page.suppressed.since,
                scope=page.suppressed.scope,
            )
            if page.suppressed
            else None
        ),
        unmasked=bool(page.revealed),
        progress=[StepOut(status=s.status, state=s.state, date=s.at) for s in thread.steps],
        messages=messages,
        status_changes=[
            StatusChangeOut(id=c.event_id, status=c.status, date=c.at)
            for c in thread.status_changes
        ],
        failures=[m for m, item in zip(messages, thread.messages, strict=True) if item.failed],
    )


@router.get("/orders/{orderId}/messages/{messageId}", summary="One whole message (audited)")
async def order_message(
    request: Request, principal: Support, order_id: OrderId, event_id: MessageId
) -> MessageDetailOut:
    def url(index: int) -> str:
        return f"/api/orders/{order_id}/messages/{event_id}/attachments/{index}"

    opened = await console_of(request).open_message(order_id, event_id, principal, url)
    view = opened.view
    return MessageDetailOut(
        id=event_id,
        subject=view.subject,
        from_=view.sender,
        to=view.to,
        cc=view.cc,
        date=view.date,
        text=view.text,
        html=view.html,
        blocked_images=view.blocked_images,
        attachments=[
            AttachmentOut(
                index=a.index,
                filename=a.filename,
                content_type=a.content_type,
                size_bytes=a.size_bytes,
                url=url(a.index),
            )
            for a in view.attachments
        ],
    )


@router.get(
    "/orders/{orderId}/messages/{messageId}/attachments/{index}",
    summary="Download one attachment (audited)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def order_attachment(
    request: Request,
    principal: Support,
    order_id: OrderId,
    event_id: MessageId,
    index: Annotated[int, Path(ge=0, le=10_000)],
) -> Response:
    found = await console_of(request).open_attachment(order_id, event_id, index, principal)
    return attachment_response(found)


def _settings_out(setting: StoreSetting) -> StoreSettingsOut:
    return StoreSettingsOut(
        store_id=setting.store_id,
        mask_type=setting.mask,
        alias_expiry=setting.alias_expiry,
        updated_at=setting.updated_at,
        updated_by=setting.updated_by,
        warning=SOFT_MASK_WARNING if setting.mask is MaskType.SOFT else None,
    )


@router.get("/stores", summary="Every known store with its settings")
async def stores(request: Request, principal: Admin) -> list[StoreSettingsOut]:
    return [_settings_out(s) for s in await console_of(request).stores(principal)]


@router.get("/stores/{storeId}/settings", summary="A store's mask type and alias expiry")
async def store_settings(request: Request, principal: Admin, store_id: StoreId) -> StoreSettingsOut:
    return _settings_out(await console_of(request).store(store_id, principal))


@router.put(
    "/stores/{storeId}/settings",
    summary="Set a store's mask type and alias expiry (for orders whose aliases are new)",
    responses=_BODY_PROBLEMS,
)
async def put_store_settings(
    request: Request, principal: Admin, store_id: StoreId, body: StoreSettingsIn
) -> StoreSettingsOut:
    setting = await console_of(request).update_store(
        store_id, body.mask_type, body.alias_expiry, principal
    )
    return _settings_out(setting)


@router.get("/dlq", summary="The most recent dead letters with their reasons")
async def dlq(
    request: Request, principal: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> DeadLetterListOut:
    letters = await console_of(request).dead_letters(principal, limit)
    return DeadLetterListOut(
        items=[
            DeadLetterOut(
                offset=item.offset,
                at=item.letter.at,
                component=item.letter.component,
                origin_topic=item.letter.origin_topic,
                origin_partition=item.letter.origin_partition,
                origin_offset=item.letter.origin_offset,
                reason=item.letter.reason,
                replayed_at=item.replay.at if item.replay else None,
                replayed_by=item.replay.operator if item.replay else None,
                store_id=item.store_id,
            )
            for item in letters
        ]
    )


@router.post(
    "/dlq/replay",
    summary="Re-publish dead letters to their original topics",
    description="Offsets of dead letters that do not exist, or that your stores do not "
    "reach, are listed in `notFound`.",
    responses=_BODY_PROBLEMS,
)
async def dlq_replay(request: Request, principal: Admin, body: ReplayIn) -> ReplayOut:
    replayed, missing = await console_of(request).replay(set(body.offsets), principal)
    return ReplayOut(replayed=replayed, not_found=missing)


@router.post(
    "/subjects/export",
    summary="Everything held about one customer (audited)",
    responses=_BODY_PROBLEMS,
)
async def subject_export(
    request: Request, principal: Admin, body: SubjectRequestIn
) -> dict[str, Any]:
    return await console_of(request).export_subject(body.email, body.reason, principal)


@router.post(
    "/subjects/erase",
    summary="Erase one customer everywhere (audited, idempotent)",
    responses=_BODY_PROBLEMS,
)
async def subject_erase(
    request: Request, principal: Admin, body: SubjectRequestIn
) -> SubjectErasureOut:
    done = await console_of(request).erase_subject(body.email, body.reason, principal)
    return SubjectErasureOut(
        subject=done.address_hash, erased=not done.already, keys_destroyed=done.subjects_erased,
        aliases=done.aliases, orders=done.orders, messages_deleted=done.messages_deleted,
        suppressions_lifted=done.suppressions_lifted,
    )  # fmt: skip


@router.get("/audit", summary="The audit log, newest first")
async def audit(
    request: Request,
    *,
    principal: Admin,
    action: Annotated[str | None, Query(max_length=64)] = None,
    operator: Annotated[str | None, Query(max_length=128)] = None,
    order_id: Annotated[str | None, Query(alias="orderId", max_length=256)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AuditListOut:
    entries, next_cursor = await console_of(request).audit_page(
        principal, action=action, operator=operator, order_id=order_id, cursor=cursor, limit=limit
    )
    return AuditListOut(
        items=[
            AuditEntryOut(
                id=e.entry_id,
                at=e.at,
                action=e.action,
                operator=e.operator,
                reason=e.reason,
                order_id=e.order_id,
                alias=e.alias,
                store_id=e.store,
                detail=e.detail,
            )
            for e in entries
        ],
        next_cursor=next_cursor,
    )


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, principal: Principal = Depends(api_principal)) -> Response:
    return JSONResponse(request.app.openapi())
