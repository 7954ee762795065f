"""The console's admin pages: store settings, dead letters, the audit log, users and tokens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from worker.domain.accounts import AccountError, Role, parse_duration
from worker.domain.aliases import SOFT_MASK_WARNING, AliasExpiry, MaskType
from worker.services.accounts import Principal
from worker.services.console import Invalid
from worker.web.rendering import render
from worker.web.security import accounts_of, checked_form, console_of, page_role

router = APIRouter(include_in_schema=False)
Admin = Annotated[Principal, Depends(page_role(Role.ADMIN))]
StoreId = Annotated[str, Path(min_length=1, max_length=256)]
UserName = Annotated[str, Path(min_length=1, max_length=64)]
TokenId = Annotated[str, Path(min_length=1, max_length=64)]


def _field(form: object, name: str) -> str:
    value = form.get(name) if hasattr(form, "get") else None
    return value.strip() if isinstance(value, str) else ""


@router.get("/stores")
async def stores(request: Request, principal: Admin) -> Response:
    return render(request, "stores.html", stores=await console_of(request).stores(principal))


@router.get("/stores/{store_id}")
async def store(
    request: Request,
    principal: Admin,
    store_id: StoreId,
    saved: Annotated[str, Query(max_length=1)] = "",
) -> Response:
    setting = await console_of(request).store(store_id, principal)
    return render(
        request, "store.html", setting=setting, saved=bool(saved), warning=SOFT_MASK_WARNING
    )


@router.post("/stores/{store_id}")
async def save_store(request: Request, principal: Admin, store_id: StoreId) -> Response:
    form = await checked_form(request, principal)
    console = console_of(request)
    try:
        mask = MaskType(_field(form, "mask"))
        expiry = AliasExpiry(_field(form, "alias_expiry"))
    except ValueError:
        setting = await console.store(store_id, principal)
        return render(
            request,
            "store.html",
            status=422,
            setting=setting,
            warning=SOFT_MASK_WARNING,
            error="Choose Hard or Soft, and fixed or order-flow expiry.",
        )
    await console.update_store(store_id, mask, expiry, principal)
    return RedirectResponse(f"/stores/{store_id}?saved=1", status_code=303)


@router.get("/dlq")
async def dlq(request: Request, principal: Admin) -> Response:
    return render(request, "dlq.html", letters=await console_of(request).dead_letters(principal))


@router.post("/dlq/replay")
async def dlq_replay(request: Request, principal: Admin) -> Response:
    form = await checked_form(request, principal)
    try:
        offsets = {int(v) for v in form.getlist("offset") if isinstance(v, str)}
    except ValueError:
        offsets = set()
    console = console_of(request)
    try:
        replayed, missing = await console.replay(offsets, principal)
    except Invalid as exc:
        return render(
            request,
            "dlq.html",
            status=422,
            letters=await console.dead_letters(principal),
            error=str(exc),
        )
    return render(
        request,
        "dlq.html",
        letters=await console.dead_letters(principal),
        replayed=replayed,
        missing=missing,
    )


@router.get("/audit")
async def audit(
    request: Request,
    *,
    principal: Admin,
    action: Annotated[str, Query(max_length=64)] = "",
    operator: Annotated[str, Query(max_length=128)] = "",
    order: Annotated[str, Query(max_length=256)] = "",
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> Response:
    console = console_of(request)
    entries, next_cursor = await console.audit_page(
        principal,
        action=action or None,
        operator=operator or None,
        order_id=order or None,
        cursor=cursor or None,
        limit=50,
    )
    return render(
        request,
        "audit.html",
        entries=entries,
        chains=await console.audit_chains(principal),
        next_cursor=next_cursor,
        action=action,
        operator=operator,
        order=order,
    )


def _stores_field(form: Any) -> list[str]:
    """Store ids from a form: one per line or comma-separated."""
    return [s for s in _field(form, "stores").replace(",", " ").split() if s]


async def _users_page(
    request: Request, principal: Principal, *, status: int = 200, **ctx: Any
) -> Response:
    users = await accounts_of(request).users(principal)
    return render(
        request,
        "users.html",
        status=status,
        users=users,
        roles=list(Role),
        my_stores=principal.scope.listed(),
        **ctx,
    )


@router.get("/users")
async def users(request: Request, principal: Admin) -> Response:
    return await _users_page(request, principal)


@router.post("/users")
async def add_user(request: Request, principal: Admin) -> Response:
    form = await checked_form(request, principal)
    try:
        role = Role(_field(form, "role"))
        user, password = await accounts_of(request).add_user(
            _field(form, "name"), role, None, by=principal, stores=_stores_field(form)
        )
    except (AccountError, ValueError) as exc:
        return await _users_page(request, principal, status=422, error=str(exc))
    return await _users_page(request, principal, created=user.name, password=password)


@router.post("/users/{name}/{action}")
async def change_user(
    request: Request,
    principal: Admin,
    name: UserName,
    action: Annotated[str, Path(pattern="^(role|scope|disable|enable|password|remove)$")],
) -> Response:
    form = await checked_form(request, principal)
    accounts = accounts_of(request)
    if name == principal.name and action in ("role", "disable", "remove"):
        return await _users_page(
            request, principal, status=422, error="You cannot demote, disable or remove yourself."
        )
    password = None
    try:
        if action == "role":
            await accounts.set_role(name, Role(_field(form, "role")), by=principal)
        elif action == "scope":
            await accounts.change_scope(
                name,
                add=_field(form, "add").replace(",", " ").split(),
                remove=_field(form, "remove").replace(",", " ").split(),
                by=principal,
            )
        elif action in ("disable", "enable"):
            await accounts.set_disabled(name, action == "disable", by=principal)
        elif action == "password":
            password = await accounts.set_password(name, None, by=principal)
        else:
            await accounts.remove_user(name, by=principal)
    except (AccountError, ValueError) as exc:
        return await _users_page(request, principal, status=422, error=str(exc))
    return await _users_page(request, principal, changed=name, action=action, password=password)


async def _tokens_page(
    request: Request, principal: Principal, *, status: int = 200, **ctx: Any
) -> Response:
    accounts = accounts_of(request)
    return render(
        request,
        "tokens.html",
        status=status,
        tokens=await accounts.tokens(principal),
        users=await accounts.users(principal),
        **ctx,
    )


@router.get("/tokens")
async def tokens(request: Request, principal: Admin) -> Response:
    return await _tokens_page(request, principal)


@router.post("/tokens")
async def create_token(request: Request, principal: Admin) -> Response:
    form = await checked_form(request, principal)
    try:
        made, token = await accounts_of(request).create_token(
            _field(form, "user"),
            _field(form, "label"),
            by=principal,
            stores=_stores_field(form),
            lifetime=parse_duration(_field(form, "expires_in") or "90d"),
        )
    except AccountError as exc:
        return await _tokens_page(request, principal, status=422, error=str(exc))
    return await _tokens_page(request, principal, new_token=made.value, new_token_user=token.user)


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(request: Request, principal: Admin, token_id: TokenId) -> Response:
    await checked_form(request, principal)
    revoked = await accounts_of(request).revoke_token(token_id, by=principal)
    return await _tokens_page(request, principal, revoked=token_id if revoked else None)
