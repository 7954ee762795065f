"""Signing in and out, and changing one's own password."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from worker.core import metrics
from worker.domain.accounts import AccountError, same_secret
from worker.services.accounts import LoggedIn, Principal, Throttled
from worker.web.problems import forbidden
from worker.web.rendering import login_page, render
from worker.web.security import (
    accounts_of,
    check_same_origin,
    checked_form,
    cookies_of,
    page_principal,
)

router = APIRouter(include_in_schema=False)
Signed = Annotated[Principal, Depends(page_principal)]


def safe_next(target: object) -> str:
    """Only a path of this console: never another site (an open redirect) nor `//host`."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        return "/orders"
    if "\\" in target or any(ord(c) < 32 for c in target):
        return "/orders"
    return target


@router.get("/login")
async def login_form(request: Request) -> Response:
    secret = request.cookies.get(cookies_of(request).session_cookie)
    if secret and await accounts_of(request).from_session(secret):
        return RedirectResponse("/orders", status_code=303)
    return login_page(request, next_path=safe_next(request.query_params.get("next")))


@router.post("/login")
async def login(request: Request) -> Response:
    check_same_origin(request)
    cookies = cookies_of(request)
    form = await request.form()
    expected = request.cookies.get(cookies.login_cookie, "")
    given = form.get("login_token")
    if not expected or not isinstance(given, str) or not same_secret(expected, given):
        raise forbidden("the login form is out of date: reload the page and sign in again")
    name, password = form.get("username"), form.get("password")
    target = safe_next(form.get("next"))
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        return login_page(request, status=422, error="Enter your name and password.")
    address = request.client.host if request.client else "unknown"
    outcome = await accounts_of(request).login(name, password, address)
    if not isinstance(outcome, LoggedIn):
        if outcome.retry_after > 0:
            metrics.WEB_LOGINS.labels(outcome="throttled").inc()
            minutes = math.ceil(outcome.retry_after / 60)
            response = login_page(
                request,
                status=429,
                error=f"Too many failed sign-ins: try again in {minutes} minute(s).",
                next_path=target,
            )
            response.headers["Retry-After"] = str(math.ceil(outcome.retry_after))
            return response
        metrics.WEB_LOGINS.labels(outcome="refused").inc()
        return login_page(request, status=401, error="Wrong name or password.", next_path=target)
    metrics.WEB_LOGINS.labels(outcome="ok").inc()
    old = request.cookies.get(cookies.session_cookie)
    if old:
        await accounts_of(request).logout(old)  # whatever session this browser had ends here
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        cookies.session_cookie, outcome.secret, **cookies.options(cookies.session_max_age_s)
    )
    response.delete_cookie(cookies.login_cookie, path="/", secure=cookies.secure, httponly=True)
    return response


@router.post("/logout")
async def logout(request: Request, principal: Signed) -> Response:
    await checked_form(request, principal)
    cookies = cookies_of(request)
    secret = request.cookies.get(cookies.session_cookie)
    if secret:
        await accounts_of(request).logout(secret)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        cookies.session_cookie, path="/", secure=cookies.secure, httponly=True, samesite="strict"
    )
    return response


@router.get("/account")
async def account(request: Request, principal: Signed) -> Response:
    return render(request, "account.html")


@router.post("/account/password")
async def change_password(request: Request, principal: Signed) -> Response:
    form = await checked_form(request, principal)
    current, new, again = form.get("current"), form.get("new"), form.get("again")
    if not all(isinstance(v, str) for v in (current, new, again)) or new != again:
        return render(request, "account.html", status=422, error="The new passwords differ.")
    address = request.client.host if request.client else "unknown"
    try:
        await accounts_of(request).change_own_password(
            principal, str(current), str(new), address=address
        )
    except Throttled as exc:
        response = render(request, "account.html", status=429, error=f"{str(exc).capitalize()}.")
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return response
    except AccountError as exc:
        return render(request, "account.html", status=422, error=f"{str(exc).capitalize()}.")
    # This session goes on; every other one, and every API token of this user, has ended.
    return render(request, "account.html", changed=True)
