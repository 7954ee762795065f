"""`POST /api/subjects/export` and `/api/subjects/erase` over real HTTP (admin only).

The story's customers stay (other tests read them): erasure is exercised here on an address the
deployment never saw, and end to end in tests/integration/test_subjects.py.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.web.conftest import Console

pytestmark = pytest.mark.stack


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _post(console: Console, path: str, token: str, body: object) -> httpx.Response:
    async with console.client() as client:
        return await client.post(path, headers=bearer(token), json=body)


async def test_an_admin_exports_a_customer_with_their_order_opened_and_the_export_audited(
    console: Console,
) -> None:
    story = console.story
    email = next(iter(story.customer_emails.values()))
    body = {"email": email, "reason": "LGPD art. 18, ticket 77"}
    response = await _post(console, "/api/subjects/export", console.admin_token, body)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["email"] == email and document["orders"] and document["aliases"]
    assert "ct-sealed:" not in json.dumps(document["orders"])  # opened for the person
    async with console.client() as client:
        audit = await client.get(
            "/api/audit", headers=bearer(console.admin_token), params={"action": "subject.export"}
        )
    [entry] = [e for e in audit.json()["items"] if e["reason"] == "LGPD art. 18, ticket 77"]
    assert email not in json.dumps(entry)  # the keyed hash only


async def test_erasure_of_an_unknown_address_is_a_no_op_and_support_may_not_ask(
    console: Console,
) -> None:
    body = {"email": "never.seen@example.net", "reason": "GDPR art. 17, ticket 78"}
    refused = await _post(console, "/api/subjects/erase", console.support_token, body)
    assert refused.status_code == 403
    done = await _post(console, "/api/subjects/erase", console.admin_token, body)
    assert done.status_code == 200, done.text
    assert done.json()["erased"] is False and done.json()["keysDestroyed"] == 0
    odd = await _post(
        console, "/api/subjects/erase", console.admin_token, {**body, "email": "no-at-sign"}
    )
    assert odd.status_code == 200 and odd.json()["erased"] is False  # nobody has that address
