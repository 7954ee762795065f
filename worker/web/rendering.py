"""Jinja2 pages: autoescaped, one layout, the signed-in principal and its CSRF token in context."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from worker.domain.accounts import new_csrf_token
from worker.services.accounts import Principal
from worker.web.problems import LoginRequired, Problem
from worker.web.security import cookies_of

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def _size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} MiB"


templates.env.filters["when"] = _when
templates.env.filters["size"] = _size
templates.env.filters["sentence"] = lambda value: str(value)[:1].upper() + str(value)[1:]
templates.env.filters["label"] = lambda value: str(value).replace("_", " ").title()


def render(
    request: Request,
    name: str,
    *,
    status: int = 200,
    principal: Principal | None = None,
    **ctx: Any,
) -> HTMLResponse:
    principal = principal or getattr(request.state, "principal", None)
    context = {
        "principal": principal,
        "csrf_token": principal.session.csrf_token if principal and principal.session else "",
        "path": request.url.path,
        "now": datetime.now(UTC),
        **ctx,
    }
    return templates.TemplateResponse(request, name, context, status_code=status)


def login_page(
    request: Request, *, status: int = 200, error: str | None = None, next_path: str = "/orders"
) -> Response:
    """The login form with a fresh login CSRF token, in a cookie and in the form alike."""
    token = new_csrf_token()
    cookies = cookies_of(request)
    response = templates.TemplateResponse(
        request,
        "login.html",
        {"principal": None, "login_token": token, "error": error, "next": next_path},
        status_code=status,
    )
    response.set_cookie(cookies.login_cookie, token, **cookies.options(max_age=3600))
    return response


async def problem_page(request: Request, problem: Problem) -> Response:
    if isinstance(problem, LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return login_page(request, status=401, next_path=target if request.method == "GET" else "/")
    response = render(request, "error.html", status=problem.status, problem=problem)
    for key, value in problem.headers.items():
        response.headers[key] = value
    return response
