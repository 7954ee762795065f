"""The ASGI application: the console's pages, the HTTP API, health, all behind one policy."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.core import metrics
from worker.services.accounts import Accounts, Principal
from worker.services.console import Console
from worker.web import admin_pages, api, auth_pages, pages
from worker.web.problems import install_problem_handlers
from worker.web.rendering import HERE, problem_page
from worker.web.security import BodyLimit, CookiePolicy, SecurityHeaders, api_principal

API_DESCRIPTION = """\
Order conversations, store settings, dead letters and the audit log of Conversation Tracker.

Authenticate with an API token (`ct token create --user NAME`) as `Authorization: Bearer ...`.
Errors are RFC 9457 problem details (`application/problem+json`): 401 when the token is missing
or wrong, 403 when its user lacks the role. Real addresses are shown only to the admin role with
a `reason`, and every unmasking and every opening of a message or attachment is audited.
"""


class RequestMetrics:
    """Time every request by route template (never the raw path: it holds order ids)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.WEB_REQUESTS.labels(route, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )


def create_app(
    *,
    console: Console,
    accounts: Accounts,
    cookies: CookiePolicy,
    ready: Callable[[], Awaitable[bool]],
) -> FastAPI:
    app = FastAPI(
        title="Conversation Tracker",
        version="1",
        description=API_DESCRIPTION,
        # The document is served by worker.web.api behind authentication, like everything else.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.console = console
    app.state.accounts = accounts
    app.state.cookies = cookies

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return PlainTextResponse("ok\n")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        ok = await ready()
        return PlainTextResponse("ready\n" if ok else "not ready\n", 200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(principal: Principal = Depends(api_principal)) -> Response:
        # Also on CT_HTTP_PORT without a token, like every worker's; this port faces people.
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in (auth_pages.router, pages.router, admin_pages.router, api.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    install_problem_handlers(app, problem_page)
    app.add_middleware(BodyLimit)
    app.add_middleware(SecurityHeaders, hsts=cookies.secure)
    app.add_middleware(RequestMetrics)
    return app
