"""The HTTP API over real HTTP, against the running console and the real MongoDB-wire database."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import read_topic
from tests.web.conftest import TESTS, Console
from worker.devtools.demo_setup import CARRIER
from worker.domain.aliases import SOFT_MASK_WARNING

pytestmark = pytest.mark.stack


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _get(console: Console, path: str, token: str, **params: Any) -> httpx.Response:
    async with console.client() as client:
        return await client.get(path, headers=bearer(token), params=params)


async def test_the_conversation_has_the_oms_shape_with_every_message_status_and_failure(
    console: Console,
) -> None:
    story = console.story
    response = await _get(
        console, f"/api/orders/{story.hard_order}/conversation", console.support_token
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["orderId"] == story.hard_order and body["unmasked"] is False
    assert [c["status"] for c in body["statusChanges"]] == [
        "PAYMENT_APPROVED", "HANDLING", "SHIPPED",
    ]  # fmt: skip
    assert [s["state"] for s in body["progress"]] == [
        "done", "done", "passed", "current", "todo",
    ]  # fmt: skip
    messages = body["messages"]
    assert len(messages) == 6 and messages == sorted(messages, key=lambda m: m["date"])
    notice = next(m for m in messages if m["subject"] == "Delivery window for your parcel")
    assert notice["hasAttachment"] and notice["attachmentNames"] == ["delivery-slip.pdf"]
    # Marked as external (issue 19): no name from outside the order reads as a participant's.
    carrier_domain = CARRIER[1].rpartition("@")[2]
    assert notice["from"]["role"] == "EXTERNAL"
    assert notice["from"]["name"] == f"{CARRIER[0]} (external, {carrier_domain})"
    assert notice["from"]["aliasMaskType"] == "hard" and notice["from"]["email"] is None
    assert notice["to"][0]["role"] == "CUSTOMER"
    assert notice["to"][0]["emailAlias"] == story.customer_alias
    assert notice["bodyKept"] and "arrives tomorrow" in notice["body"]
    assert {m["state"] for m in messages} == {"sent", "forwarded"}
    assert body["failures"] == []
    text = response.text
    for address in story.real_addresses:
        assert address not in text, f"{address} leaked into a hard store's conversation"


async def test_a_refused_email_is_a_failure_of_the_soft_order(console: Console) -> None:
    story = console.story
    response = await _get(
        console, f"/api/orders/{story.soft_order}/conversation", console.support_token
    )
    body = response.json()
    [failure] = body["failures"]
    assert failure["state"] == "failed" and failure["failureReason"].startswith("550")
    assert body["progress"][-1] == {"status": "DELIVERED", "state": "current",
                                    "date": body["statusChanges"][-1]["date"]}  # fmt: skip
    assert all(m["from"]["aliasMaskType"] == "soft" for m in body["messages"])
    # 5.1.1 says the mailbox does not exist: the customer is suppressed, and the console says so.
    suppressed = body["customerSuppressed"]
    assert (suppressed["status"], suppressed["scope"]) == ("5.1.1", "order"), body
    hard = await _get(
        console, f"/api/orders/{story.hard_order}/conversation", console.support_token
    )
    assert hard.json()["customerSuppressed"] is None


async def test_real_addresses_need_the_admin_role_and_a_reason_and_are_audited(
    console: Console,
) -> None:
    story = console.story
    path = f"/api/orders/{story.hard_order}/conversation"
    refused = await _get(console, path, console.support_token, reason="ticket 1")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    empty = await _get(console, path, console.admin_token, reason="  ")
    assert empty.status_code == 422 and "reason" in empty.json()["detail"]

    shown = await _get(console, path, console.admin_token, reason="ticket 4711: carrier dispute")
    assert shown.status_code == 200 and shown.json()["unmasked"] is True
    emails = {
        p["email"] for m in shown.json()["messages"] for p in (m["from"], *m["to"]) if p["email"]
    }
    assert {story.customer_emails[story.hard_order], CARRIER[1]} <= emails
    audit = await _get(
        console, "/api/audit", console.admin_token, action="conversation.unmask",
        orderId=story.hard_order,
    )  # fmt: skip
    entry = audit.json()["items"][0]
    assert entry["reason"] == "ticket 4711: carrier dispute"
    assert entry["operator"].startswith("ada (token ")


async def test_a_message_and_its_attachment_open_whole_and_each_opening_is_audited(
    console: Console,
) -> None:
    story = console.story
    conversation = await _get(
        console, f"/api/orders/{story.hard_order}/conversation", console.support_token
    )
    notice = next(
        m for m in conversation.json()["messages"] if m["attachmentNames"] == ["delivery-slip.pdf"]
    )
    base = f"/api/orders/{story.hard_order}/messages/{notice['id']}"
    opened = await _get(console, base, console.support_token)
    assert opened.status_code == 200
    detail = opened.json()
    assert "arrives tomorrow" in detail["text"]
    [attachment] = detail["attachments"]
    assert attachment["filename"] == "delivery-slip.pdf"
    download = await _get(console, attachment["url"], console.support_token)
    assert download.status_code == 200 and download.content.startswith(b"%PDF-1.4")
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in download.headers["content-security-policy"]
    audit = (
        await _get(console, "/api/audit", console.admin_token, orderId=story.hard_order)
    ).json()
    actions = [(e["action"], e["detail"].get("message")) for e in audit["items"]]
    assert ("message.open", notice["id"]) in actions
    assert ("attachment.open", notice["id"]) in actions
    wrong_order = await _get(
        console, f"/api/orders/{story.soft_order}/messages/{notice['id']}", console.support_token
    )
    assert wrong_order.status_code == 404


async def test_orders_are_found_by_id_prefix_alias_store_and_status_with_a_cursor(
    console: Console,
) -> None:
    story = console.story
    token = console.support_token

    async def ids(**params: Any) -> list[str]:
        response = await _get(console, "/api/orders", token, **params)
        assert response.status_code == 200, response.text
        return [o["orderId"] for o in response.json()["items"]]

    assert await ids(q=story.hard_order) == [story.hard_order]
    assert await ids(q=story.customer_alias.upper()) == [story.hard_order]
    assert await ids(q="nobody@ct.example.com") == []
    assert set(await ids(q=story.hard_order[:6])) == {story.hard_order}
    assert await ids(storeId="bazar") == [story.soft_order]
    assert await ids(status="DELIVERED") == [story.soft_order]
    first = await _get(console, "/api/orders", token, limit=1)
    assert first.json()["nextCursor"]
    second = await _get(console, "/api/orders", token, limit=1, cursor=first.json()["nextCursor"])
    seen = [first.json()["items"][0]["orderId"], second.json()["items"][0]["orderId"]]
    assert sorted(seen) == sorted([story.hard_order, story.soft_order])
    assert second.json()["nextCursor"] is None
    bad = await _get(console, "/api/orders", token, cursor="garbage!")
    assert bad.status_code == 404 and "cursor" in bad.json()["detail"]
    invalid = await _get(console, "/api/orders", token, status="LOST")
    assert invalid.status_code == 422
    assert invalid.json()["detail"].startswith("query parameter 'status'")


async def test_store_settings_round_trip_validate_and_warn_about_soft(console: Console) -> None:
    headers = bearer(console.admin_token)
    async with console.client(headers=headers) as client:
        put = await client.put(
            "/api/stores/api-store/settings", json={"maskType": "soft", "aliasExpiry": "orderFlow"}
        )
        assert put.status_code == 200, put.text
        assert put.json()["warning"] == SOFT_MASK_WARNING
        got = (await client.get("/api/stores/api-store/settings")).json()
        assert (got["maskType"], got["aliasExpiry"]) == ("soft", "orderFlow")
        assert got["updatedBy"].startswith("ada")
        bad = await client.put("/api/stores/api-store/settings", json={"maskType": "medium"})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        assert "maskType" in bad.json()["detail"] and bad.json()["status"] == 422
        listed = {s["storeId"] for s in (await client.get("/api/stores")).json()}
        assert {"aurora", "bazar", "api-store"} <= listed


async def test_dead_letters_list_with_reasons_and_replay_to_the_original_topic(
    console: Console,
) -> None:
    headers = bearer(console.admin_token)
    async with console.client(headers=headers) as client:
        listed = (await client.get("/api/dlq")).json()["items"]
        letter = next(x for x in listed if x["originTopic"] == console.settings.topic_order_status)
        assert letter["component"] == "notifier" and letter["reason"]
        replayed = await client.post("/api/dlq/replay", json={"offsets": [letter["offset"], 999]})
        assert replayed.json() == {"replayed": [letter["offset"]], "notFound": [999]}
        again = (await client.get("/api/dlq")).json()["items"]
        assert next(x for x in again if x["offset"] == letter["offset"])["replayedBy"] == (
            "ada (token " + console.admin_token.split("_")[1] + ")"
        )
        empty = await client.post("/api/dlq/replay", json={"offsets": []})
        assert empty.status_code == 422
    records = await read_topic(console.settings, console.settings.topic_order_status, want=8)
    replays = [r for r in records if any(k == "ct.replayed-from" for k, _ in r.headers or ())]
    assert replays and replays[-1].value == b"not avro"


async def test_the_openapi_document_lists_every_api_route_and_needs_a_token(
    console: Console,
) -> None:
    async with console.client() as client:
        assert (await client.get("/api/openapi.json")).status_code == 401
        document = (
            await client.get("/api/openapi.json", headers=bearer(console.support_token))
        ).json()
    paths = set(document["paths"])
    assert {
        "/api/orders", "/api/orders/{orderId}/conversation", "/api/stores/{storeId}/settings",
        "/api/dlq", "/api/dlq/replay", "/api/audit",
    } <= paths  # fmt: skip
    assert all(not p.startswith(("/orders", "/login")) for p in paths)
    put = document["paths"]["/api/stores/{storeId}/settings"]["put"]
    assert "application/problem+json" in put["responses"]["422"]["content"]


async def test_a_revoked_token_is_refused(console: Console, accounts: Any) -> None:
    made, token = await accounts.create_token("sam", "short-lived", by=TESTS)
    assert (await _get(console, "/api/me", made.value)).json() == {
        "name": "sam", "role": "support", "via": "token", "stores": None,
    }  # fmt: skip
    await accounts.revoke_token(token.token_id, by=TESTS)
    refused = await _get(console, "/api/me", made.value)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    forged = made.value[:-4] + "AAAA"
    assert (await _get(console, "/api/me", forged)).status_code == 401


async def test_health_is_public_and_metrics_need_a_token(console: Console) -> None:
    async with console.client() as client:
        assert (await client.get("/healthz")).text == "ok\n"
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 401
        scraped = await client.get("/metrics", headers=bearer(console.support_token))
    assert 'ct_web_request_seconds_count{method="GET",route="/api/orders"' in scraped.text


async def test_the_workers_kept_every_message_whole_the_refused_one_too(console: Console) -> None:
    # The hard order: 3 notifications, the carrier's notice, the reply, the hostile message;
    # the soft order: 3 notifications and the one the upstream refused.
    assert console.story.kept == 10


async def test_a_boolean_or_a_string_is_no_dead_letter_offset(console: Console) -> None:
    async with console.client(headers=bearer(console.admin_token)) as client:
        for offsets in ([False], [True], ["0"], [0.5], [-1]):
            refused = await client.post("/api/dlq/replay", json={"offsets": offsets})
            assert refused.status_code == 422, offsets
            assert refused.headers["content-type"] == "application/problem+json"
        not_json = await client.post(
            "/api/dlq/replay", content=b"\xff", headers={"content-type": "application/json"}
        )
        assert not_json.status_code in (400, 422)


async def test_a_refused_method_names_every_method_of_its_path(console: Console) -> None:
    async with console.client(headers=bearer(console.admin_token)) as client:
        refused = await client.request("DELETE", "/api/stores/aurora/settings")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, PUT"
