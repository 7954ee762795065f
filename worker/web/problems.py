"""Errors as RFC 9457 problem details on the API, and as a page for people in the console.

Every refusal carries one line that says what to fix. 401 means "who are you?" (no or a bad
credential), 403 "you may not" (a known user without the role, or a form without its token).
"""

from __future__ import annotations

import functools
import re
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from worker.adapters.paging import BadCursor
from worker.domain.accounts import AccountError
from worker.services.console import Invalid, Missing, Refused

log = structlog.get_logger(__name__)
PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPES = "https://conversation-tracker.invalid/problems/"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.headers = headers or {}

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase


class LoginRequired(Problem):
    """No session, or an expired one: the console answers with its login form."""

    def __init__(self) -> None:
        super().__init__(401, "sign in to continue", kind="login-required")


def unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        detail,
        kind="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="conversation-tracker"'},
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, detail, kind="forbidden")


def problem_body(problem: Problem, instance: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPES + problem.kind if problem.kind else "about:blank",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    return body


def _validation_detail(exc: RequestValidationError) -> str:
    errors = list(exc.errors())
    if not errors:
        return "the request is not valid"
    first = errors[0]
    where = [str(part) for part in first.get("loc", ())]
    place = {"query": "query parameter", "path": "path parameter", "body": "body field"}.get(
        where[0] if where else "", "field"
    )
    name = ".".join(where[1:]) or "(the whole body)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{place} {name!r}: {first.get('msg', 'is not valid')}{more}"


_SIMPLE: dict[type[Exception], tuple[int, str]] = {
    Missing: (404, "not-found"),
    # The page a cursor names does not exist when the cursor is not one we gave out: 404, as
    # for an order that does not exist (a schema cannot tell a client which strings we gave).
    BadCursor: (404, "bad-cursor"),
    Invalid: (422, "invalid-request"),
    Refused: (403, "forbidden"),
    AccountError: (422, "invalid-request"),
}


def to_problem(exc: Exception) -> Problem:
    """The problem an exception stands for; unexpected ones become a bare 500."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, RequestValidationError):
        return Problem(422, _validation_detail(exc), kind="invalid-request")
    for kind, (status, name) in _SIMPLE.items():
        if isinstance(exc, kind):
            return Problem(status, str(exc), kind=name)
    if isinstance(exc, StarletteHTTPException):
        detail = {
            404: "no such page or API route: check the address",
            405: "this route does not take that method",
        }.get(exc.status_code, str(exc.detail))
        return Problem(exc.status_code, detail, headers=dict(exc.headers or {}))
    return Problem(500, "internal error; the server log has the details", kind="internal")


def allowed_methods(request: Request) -> str:
    """Every method some route of this path takes: GET and PUT of one path are two routes, and
    the one that refused knows only its own."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        if route.path and route.methods and _pattern(route.path).fullmatch(request.url.path):
            methods |= set(route.methods)
    return ", ".join(sorted(methods - {"HEAD"}))


@functools.cache
def _pattern(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]


def install_problem_handlers(app: FastAPI, render_page: Any) -> None:
    """API paths answer problem+json; console pages answer with `render_page(request, problem)`."""

    async def handle(request: Request, exc: Exception) -> Response:
        problem = to_problem(exc)
        if problem.status == 405:
            problem.headers["Allow"] = allowed_methods(request)
        if problem.status >= 500:
            log.error("request_failed", path=request.url.path, exc_info=exc)
        if request.url.path.startswith(("/api/", "/metrics")):
            return JSONResponse(
                problem_body(problem, request.url.path),
                status_code=problem.status,
                media_type=PROBLEM_JSON,
                headers=problem.headers,
            )
        response: Response = await render_page(request, problem)
        return response

    for kind in (
        Problem,
        RequestValidationError,
        StarletteHTTPException,
        Missing,
        Invalid,
        BadCursor,
        AccountError,
        Exception,
    ):
        app.add_exception_handler(kind, handle)
