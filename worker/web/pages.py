"""The console's support pages: finding orders, reading a conversation, opening a message."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from worker.contracts.events import OrderStatus
from worker.domain.accounts import Role
from worker.services.accounts import Principal
from worker.services.console import Invalid
from worker.web.downloads import attachment_response
from worker.web.rendering import render
from worker.web.security import checked_form, console_of, page_role

router = APIRouter(include_in_schema=False)
Support = Annotated[Principal, Depends(page_role(Role.SUPPORT))]
Admin = Annotated[Principal, Depends(page_role(Role.ADMIN))]
OrderId = Annotated[str, Path(min_length=1, max_length=256)]
EventId = Annotated[str, Path(min_length=1, max_length=256)]
RECENT_PER_STORE = 5


@router.get("/")
async def home(principal: Support) -> Response:
    return RedirectResponse("/orders", status_code=303)


@router.get("/orders")
async def orders(
    request: Request,
    *,
    principal: Support,
    q: Annotated[str, Query(max_length=320)] = "",
    store: Annotated[str, Query(max_length=256)] = "",
    status: Annotated[str, Query(max_length=32)] = "",
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> Response:
    queries = console_of(request).orders
    chosen = status if status in OrderStatus.__members__ else ""
    stores = await queries.store_ids(principal.scope)
    if q or store or chosen or cursor:
        found, next_cursor = await queries.search(
            scope=principal.scope,
            store_id=store or None,
            status=chosen or None,
            text=q or None,
            cursor=cursor or None,
            limit=25,
        )
        if q and len(found) == 1 and not cursor:
            return RedirectResponse(f"/orders/{found[0].order_id}", status_code=303)
        groups = [("Matching orders", found)]
    else:
        next_cursor = None
        groups = [
            (
                f"Recent orders of {store_id}",
                (
                    await queries.search(
                        scope=principal.scope, store_id=store_id, limit=RECENT_PER_STORE
                    )
                )[0],
            )
            for store_id in stores
        ]
    return render(
        request,
        "orders.html",
        groups=groups,
        stores=stores,
        statuses=[s.value for s in OrderStatus if s is not OrderStatus.UNKNOWN],
        q=q,
        store=store,
        chosen_status=chosen,
        next_cursor=next_cursor,
        searched=bool(q or store or chosen),
    )


@router.get("/orders/{order_id}")
async def order(request: Request, principal: Support, order_id: OrderId) -> Response:
    page = await console_of(request).order_page(order_id, principal)
    return render(request, "order.html", page=page)


@router.post("/orders/{order_id}/unmask")
async def unmask(request: Request, principal: Admin, order_id: OrderId) -> Response:
    form = await checked_form(request, principal)
    console = console_of(request)
    page = await console.order_page(order_id, principal)
    reason = form.get("reason")
    try:
        page = await console.unmask(page, principal, reason if isinstance(reason, str) else "")
    except Invalid as exc:
        return render(request, "order.html", status=422, page=page, unmask_error=str(exc))
    return render(request, "order.html", page=page)


@router.get("/orders/{order_id}/messages/{event_id}")
async def message(
    request: Request, principal: Support, order_id: OrderId, event_id: EventId
) -> Response:
    def url(index: int) -> str:
        return f"/orders/{order_id}/messages/{event_id}/attachments/{index}"

    opened = await console_of(request).open_message(order_id, event_id, principal, url)
    return render(request, "message.html", opened=opened, attachment_url=url)


@router.get("/orders/{order_id}/messages/{event_id}/attachments/{index}")
async def attachment(
    request: Request,
    principal: Support,
    order_id: OrderId,
    event_id: EventId,
    index: Annotated[int, Path(ge=0, le=10_000)],
) -> Response:
    found = await console_of(request).open_attachment(order_id, event_id, index, principal)
    return attachment_response(found)
