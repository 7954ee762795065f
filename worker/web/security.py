"""Who is asking and may they: API bearer tokens, console sessions, CSRF, security headers.

The API takes only `Authorization: Bearer` tokens, never cookies, so no other site can make a
browser call it with someone's session. Console forms carry a per-session synchronizer token
and must come from the console's own origin (Origin and Sec-Fetch-Site, where the browser sends
them). Every response gets a CSP that allows no script at all, and refuses framing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import FormData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.domain.accounts import Role, same_secret
from worker.services.accounts import Accounts, Principal
from worker.services.console import Console
from worker.web.problems import LoginRequired, Problem, forbidden, unauthorized

MAX_BODY_BYTES = 1024 * 1024
CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# A downloaded attachment is someone else's content: it may run nothing, even opened in a tab.
ATTACHMENT_CSP = "default-src 'none'; sandbox"
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
_bearer = HTTPBearer(auto_error=False, description="An API token from `ct token create`")


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    secure: bool
    session_max_age_s: int

    @property
    def session_cookie(self) -> str:
        # __Host-: the browser takes it only if Secure, for path / and this host alone.
        return "__Host-ct-session" if self.secure else "ct-session"

    @property
    def login_cookie(self) -> str:
        return "__Host-ct-login" if self.secure else "ct-login"

    def options(self, max_age: int | None) -> dict[str, Any]:
        return {
            "max_age": max_age,
            "path": "/",
            "secure": self.secure,
            "httponly": True,
            "samesite": "strict",
        }


def console_of(request: Request) -> Console:
    return cast(Console, request.app.state.console)


def accounts_of(request: Request) -> Accounts:
    return cast(Accounts, request.app.state.accounts)


def cookies_of(request: Request) -> CookiePolicy:
    return cast(CookiePolicy, request.app.state.cookies)


async def api_principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    if credentials is None:
        raise unauthorized("send an API token as `Authorization: Bearer ...` (`ct token create`)")
    principal = await accounts_of(request).from_token(credentials.credentials)
    if principal is None:
        raise unauthorized("the API token is unknown, revoked, or its user is disabled")
    request.state.principal = principal
    return principal


def api_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    async def check(principal: Principal = Depends(api_principal)) -> Principal:
        if not principal.may(role):
            raise forbidden(
                f"this needs the {role.value} role; {principal.name} is {principal.role}"
            )
        return principal

    return check


async def page_principal(request: Request) -> Principal:
    secret = request.cookies.get(cookies_of(request).session_cookie)
    principal = await accounts_of(request).from_session(secret) if secret else None
    if principal is None:
        raise LoginRequired
    request.state.principal = principal
    return principal


def page_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    async def check(principal: Principal = Depends(page_principal)) -> Principal:
        if not principal.may(role):
            raise forbidden(f"this page is for the {role.value} role; you are {principal.role}")
        return principal

    return check


def check_same_origin(request: Request) -> None:
    """Refuse a form another site made the browser send; CSRF tokens are the main guard."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise forbidden("this form was sent from another site; use the console's own pages")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        host = request.headers.get("host", "")
        if origin.split("://", 1)[-1] != host:
            raise forbidden("this form was sent from another site; use the console's own pages")


async def checked_form(request: Request, principal: Principal) -> FormData:
    """The posted form, once its CSRF token matches the session's."""
    check_same_origin(request)
    form = await request.form()
    token = form.get("csrf_token")
    session = principal.session
    if session is None or not isinstance(token, str) or not same_secret(session.csrf_token, token):
        raise Problem(
            403,
            "this form has no valid CSRF token: reload the page and send it again",
            kind="csrf",
        )
    return form


class SecurityHeaders:
    """Pure ASGI middleware: the same headers on every response, errors included."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self._app = app
        self._hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = dict(HEADERS)
                extra["content-security-policy"] = CSP
                extra["cache-control"] = "public, max-age=3600" if static else "no-store"
                if self._hsts:
                    extra["strict-transport-security"] = "max-age=31536000"
                headers += [
                    (k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present
                ]
                message["headers"] = headers
            await send(message)

        await self._app(scope, receive, with_headers)


class BodyLimit:
    """Refuse request bodies over `limit` bytes: the console takes forms and small JSON only."""

    def __init__(self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._limit):
            await _too_large(send, self._limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self._limit:
                raise Problem(413, f"the request body is over {self._limit} bytes")
            return message

        await self._app(scope, counted, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {"title": "Content Too Large", "status": 413, "detail": f"the body is over {limit} bytes"}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/problem+json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
