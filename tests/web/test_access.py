"""Who may call what: every route of the app, walked without credentials and with the wrong role.

The tables below are the access policy; the walk fails when a route exists that they do not
name, so a new route cannot ship without a decision about who may call it. With two stores as
tenants, the walk also asks every route that names an order, a message, an attachment, a store
or a dead letter for the other store's, as each store's support user and admin, and compares
the answer with the one for a resource that does not exist.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from tests.web.conftest import STORES, Console, Session, Tenants

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


# Stores as tenants. Every route that names an order, a message, an attachment, a store or a
# dead letter, asked by a principal scoped to one store for the other store's, must answer
# exactly as for one that does not exist: the same status and the same body, ids aside.
MISSING = {"order": "no-such-order-0", "message": "no-such-message-0", "store": "no-such-store"}
MISSING_OFFSET = 987_654_321
RESOURCE_ROUTES = {
    t
    for t in ADMIN | SUPPORT
    if any(p in t[1] for p in ("order_id", "orderId", "store_id", "storeId"))
} | {("POST", "/dlq/replay"), ("POST", "/api/dlq/replay")}


def fill(template: str, order: str, message: str, store: str) -> str:
    values = {
        "{order_id}": order, "{orderId}": order, "{event_id}": message, "{messageId}": message,
        "{index}": "0", "{store_id}": store, "{storeId}": store,
    }  # fmt: skip
    for key, value in values.items():
        template = template.replace(key, value)
    return template


def normalized(response: httpx.Response, *ids: object) -> tuple[int, str]:
    text = response.text
    for value in sorted((str(i) for i in ids if i != ""), key=len, reverse=True):
        text = text.replace(value, "<id>")
    return response.status_code, text


async def ask(
    console: Console, tenants: Tenants, who: str, route: tuple[str, str], *, path: str, offset: int
) -> httpx.Response:
    method, template = route
    async with console.client() as client:
        if is_api(template):
            headers = {"Authorization": f"Bearer {tenants.tokens[who]}"}
            body = {"offsets": [offset]} if "replay" in template else JSON_BODIES.get(template)
            return await client.request(method, path, headers=headers, json=body)
        session = Session(client, tenants.cookies[who], "__Host-ct-session")
        if method == "GET":
            return await session.get(path)
        form = {"csrf_token": await session.csrf(), "reason": "a test", "mask": "soft",
                "alias_expiry": "fixed", "offset": str(offset)}  # fmt: skip
        return await session.post(path, form)


async def test_another_stores_resources_answer_exactly_like_missing_ones_on_every_route(
    console: Console, tenants: Tenants
) -> None:
    table: list[tuple[str, str, str, str]] = []
    for store in STORES:
        other = Tenants.other(store)
        theirs = {"order": tenants.orders[other], "message": tenants.messages[other],
                  "store": other}  # fmt: skip
        attachment_message = tenants.attached[other] or tenants.messages[other]
        for role, allowed in (("support", SUPPORT), ("admin", ADMIN | SUPPORT)):
            who = f"{store}-{role}"
            for method, template in sorted(RESOURCE_ROUTES & allowed):
                message = attachment_message if "attachments" in template else theirs["message"]
                cases = [
                    (fill(template, theirs["order"], message, other), tenants.letters[other]),
                    (fill(template, *MISSING.values()), MISSING_OFFSET),
                ]
                if (
                    "{event_id}" in template or "{messageId}" in template
                ):  # own order, their message
                    own = tenants.orders[store]
                    cases += [(fill(template, own, message, store), 0),
                              (fill(template, own, MISSING["message"], store), 0)]  # fmt: skip
                answers = [
                    await ask(console, tenants, who, (method, template), path=path, offset=offset)
                    for path, offset in cases
                ]
                ids = [*theirs.values(), message, *MISSING.values(), tenants.letters[other],
                       MISSING_OFFSET]  # fmt: skip
                for theirs_answer, missing_answer in zip(answers[::2], answers[1::2], strict=True):
                    assert normalized(theirs_answer, *ids) == normalized(missing_answer, *ids), (
                        who,
                        method,
                        template,
                        theirs_answer.text[:300],
                        missing_answer.text[:300],
                    )
                status = answers[0].status_code
                if "replay" in template:
                    assert status == 200 and (not is_api(template) or answers[0].json() == {
                        "replayed": [], "notFound": [tenants.letters[other]]})  # fmt: skip
                else:
                    assert status == 404, (who, method, template, status)
                table.append((who, f"{method} {template}", other, f"{status}, as a missing one"))
    print("\naccess table (principal x route x store: answer)")
    for row in table:
        print(" | ".join(row))


async def test_the_platform_admin_reaches_both_stores(console: Console, tenants: Tenants) -> None:
    headers = {"Authorization": f"Bearer {console.admin_token}"}
    async with console.client(headers=headers) as client:
        for store in STORES:
            order, message = tenants.orders[store], tenants.messages[store]
            for path in (f"/api/orders/{order}/conversation",
                         f"/api/orders/{order}/messages/{message}",
                         f"/api/stores/{store}/settings"):  # fmt: skip
                assert (await client.get(path)).status_code == 200, path
        letters = {i["offset"] for i in (await client.get("/api/dlq")).json()["items"]}
        assert {*tenants.letters.values(), tenants.storeless_letter} <= letters
