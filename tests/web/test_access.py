"""Who may call what: every route of the app, walked without credentials and with the wrong role.

The tables below are the access policy; the walk fails when a route exists that they do not
name, so a new route cannot ship without a decision about who may call it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from tests.web.conftest import Console, Session

pytestmark = pytest.mark.stack

PUBLIC = {
    ("GET", "/login"), ("POST", "/login"), ("GET", "/healthz"), ("GET", "/readyz"),
}  # fmt: skip
ADMIN = {
    ("POST", "/orders/{order_id}/unmask"),
    ("GET", "/stores"), ("GET", "/stores/{store_id}"), ("POST", "/stores/{store_id}"),
    ("GET", "/dlq"), ("POST", "/dlq/replay"), ("GET", "/audit"),
    ("GET", "/users"), ("POST", "/users"), ("POST", "/users/{name}/{action}"),
    ("GET", "/tokens"), ("POST", "/tokens"), ("POST", "/tokens/{token_id}/revoke"),
    ("GET", "/api/stores"), ("GET", "/api/stores/{storeId}/settings"),
    ("PUT", "/api/stores/{storeId}/settings"), ("GET", "/api/dlq"), ("POST", "/api/dlq/replay"),
    ("GET", "/api/audit"), ("POST", "/api/subjects/export"), ("POST", "/api/subjects/erase"),
}  # fmt: skip
SUPPORT = {
    ("GET", "/"), ("GET", "/orders"), ("GET", "/orders/{order_id}"),
    ("GET", "/orders/{order_id}/messages/{event_id}"),
    ("GET", "/orders/{order_id}/messages/{event_id}/attachments/{index}"),
    ("POST", "/logout"), ("GET", "/account"), ("POST", "/account/password"),
    ("GET", "/api/me"), ("GET", "/api/orders"), ("GET", "/api/orders/{orderId}/conversation"),
    ("GET", "/api/orders/{orderId}/messages/{messageId}"),
    ("GET", "/api/orders/{orderId}/messages/{messageId}/attachments/{index}"),
    ("GET", "/api/openapi.json"), ("GET", "/metrics"),
}  # fmt: skip
JSON_BODIES = {
    "/api/stores/{storeId}/settings": {"maskType": "hard", "aliasExpiry": "fixed"},
    "/api/dlq/replay": {"offsets": [0]},
    "/api/subjects/export": {"email": "nobody@example.net", "reason": "access walk"},
    "/api/subjects/erase": {"email": "nobody@example.net", "reason": "access walk"},
}


def is_api(template: str) -> bool:
    """Routes for programs (bearer tokens, problem+json); the rest are pages for people."""
    return template.startswith(("/api/", "/metrics"))


def routes(console: Console) -> set[tuple[str, str]]:
    found = set()
    for route in iter_route_contexts(console.app.routes):
        if route.path and route.methods and not route.path.startswith("/static"):
            found |= {(method, route.path) for method in route.methods if method != "HEAD"}
    return found


def concrete(console: Console, path: str) -> str:
    order = console.story.hard_order
    values = {
        "order_id": order, "orderId": order, "event_id": "e", "messageId": "e", "index": "0",
        "store_id": "aurora", "storeId": "aurora", "name": "ada", "action": "disable",
        "token_id": "000000000000",
    }  # fmt: skip
    for key, value in values.items():
        path = path.replace("{" + key + "}", value)
    return path


async def call(
    client: httpx.AsyncClient, method: str, path: str, template: str, **kwargs: Any
) -> httpx.Response:
    if method in ("POST", "PUT") and is_api(template):
        kwargs["json"] = JSON_BODIES.get(template, {})
    return await client.request(method, path, **kwargs)


def test_every_route_is_in_the_access_tables(console: Console) -> None:
    assert routes(console) == PUBLIC | ADMIN | SUPPORT


async def test_every_route_but_login_and_health_answers_401_without_credentials(
    console: Console,
) -> None:
    async with console.client() as client:
        for method, template in sorted(ADMIN | SUPPORT):
            response = await call(client, method, concrete(console, template), template)
            assert response.status_code == 401, (method, template, response.text[:200])
            if is_api(template):
                assert response.headers["content-type"] == "application/problem+json"
                assert response.headers["www-authenticate"].startswith("Bearer")
            else:
                assert 'name="login_token"' in response.text  # the login form, right there


async def test_the_api_takes_no_session_cookie_and_pages_take_no_token(
    console: Console, admin: Session
) -> None:
    async with console.client() as client:
        for method, template in sorted(ADMIN | SUPPORT):
            path = concrete(console, template)
            if is_api(template):
                response = await call(client, method, path, template, headers=admin.headers)
            else:
                headers = {"Authorization": f"Bearer {console.admin_token}"}
                response = await call(client, method, path, template, headers=headers)
            assert response.status_code == 401, (method, template)


async def test_every_admin_route_answers_403_to_the_support_role(
    console: Console, support: Session
) -> None:
    csrf = await support.csrf()
    token = {"Authorization": f"Bearer {console.support_token}"}
    async with console.client() as client:
        for method, template in sorted(ADMIN):
            path = concrete(console, template)
            if is_api(template):
                response = await call(client, method, path, template, headers=token)
                assert response.json()["status"] == 403
            elif method == "POST":
                response = await support.post(path, {"csrf_token": csrf, "reason": "x"})
            else:
                response = await support.get(path)
            assert response.status_code == 403, (method, template, response.text[:300])
            assert "admin role" in response.text


async def test_support_reaches_every_support_page(console: Console, support: Session) -> None:
    for path in ("/orders", f"/orders/{console.story.hard_order}", "/account"):
        response = await support.get(path)
        assert response.status_code == 200, path
        assert "Dead letters" not in response.text  # no admin links for support
    order = await support.get(f"/orders/{console.story.hard_order}")
    assert "its aliases work until" in order.text
    assert "Show real addresses" not in order.text  # unmasking is the admin's
