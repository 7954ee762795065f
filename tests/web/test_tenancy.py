"""Stores as tenants beyond the route walk: lists, search and paging within scope, scopes that
change between requests, tokens that narrow and expire, scoped admins, sign-in throttling under
parallel guesses, and the audit chain that `ct audit verify` checks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest

from tests.conftest import REPO
from tests.web.conftest import (
    ADMIN,
    PASSWORD,
    STORES,
    TESTS,
    Console,
    Session,
    Tenants,
    set_cookie,
    sign_in,
)
from worker.adapters import mongo
from worker.adapters.audit import AuditLog
from worker.adapters.paging import encode_cursor
from worker.core.config import Settings
from worker.domain.accounts import AccountError, Role
from worker.services.accounts import Accounts

pytestmark = pytest.mark.stack
SESSION = "__Host-ct-session"
CT = str(REPO / ".venv/bin/ct")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def from_address(console: Console, address: str) -> httpx.AsyncClient:
    return console.client(transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_lists_search_and_paging_show_only_the_principals_stores(
    console: Console, tenants: Tenants
) -> None:
    async with console.client(headers=bearer(console.admin_token)) as platform:
        thread = (await platform.get(f"/api/orders/{tenants.orders['bazar']}/conversation")).json()
        bazar_alias = thread["messages"][0]["to"][0]["emailAlias"]
        bazar_summary = await platform.get("/api/orders", params={"q": tenants.orders["bazar"]})
    bazar = bazar_summary.json()["items"][0]
    assert bazar["storeId"] == "bazar"
    # A cursor that points into the other store's orders moves nothing across the boundary.
    updated = datetime.fromisoformat(bazar["updatedAt"])
    foreign_cursor = encode_cursor(updated + timedelta(days=1), bazar["orderId"])
    async with console.client(headers=bearer(tenants.tokens["aurora-support"])) as aurora:
        me = (await aurora.get("/api/me")).json()
        assert me["stores"] == ["aurora"]
        for params in ({}, {"q": tenants.orders["bazar"]}, {"q": tenants.orders["bazar"][:6]},
                       {"q": bazar_alias}, {"storeId": "bazar"}, {"cursor": foreign_cursor},
                       {"limit": 1}):  # fmt: skip
            found = (await aurora.get("/api/orders", params=params)).json()
            assert {o["storeId"] for o in found["items"]} <= {"aurora"}, params
            assert tenants.orders["bazar"] not in str(found), params
        assert (await aurora.get("/api/orders", params={"q": bazar_alias})).json()["items"] == []
    async with console.client(headers=bearer(tenants.tokens["bazar-support"])) as own:
        mine = (await own.get("/api/orders", params={"q": bazar_alias})).json()["items"]
        assert [o["orderId"] for o in mine] == [tenants.orders["bazar"]]
    async with console.client() as client:
        page = Session(client, tenants.cookies["aurora-support"], SESSION)
        listed = await page.get("/orders")
        searched = await page.get("/orders", params={"q": tenants.orders["bazar"]})
        assert listed.status_code == 200 and tenants.orders["aurora"] in listed.text
        assert searched.status_code == 200  # no redirect to the other store's order
        assert "bazar" not in listed.text and tenants.orders["bazar"] not in listed.text
        # The search box shows what was asked; no row, link or store option shows the order.
        assert f'href="/orders/{tenants.orders["bazar"]}"' not in searched.text
        assert ">bazar<" not in searched.text and 'value="bazar"' not in searched.text


async def test_admin_lists_stores_dead_letters_and_audit_of_their_stores_only(
    console: Console, tenants: Tenants
) -> None:
    async with console.client(headers=bearer(tenants.tokens["aurora-support"])) as support:
        opened = await support.get(
            f"/api/orders/{tenants.orders['aurora']}/messages/{tenants.messages['aurora']}"
        )
        assert opened.status_code == 200
    async with console.client(headers=bearer(tenants.tokens["aurora-admin"])) as admin:
        stores = (await admin.get("/api/stores")).json()
        assert [s["storeId"] for s in stores] == ["aurora"]
        letters = (await admin.get("/api/dlq")).json()["items"]
        assert [(i["offset"], i["storeId"]) for i in letters] == [
            (tenants.letters["aurora"], "aurora")
        ]  # neither the other store's nor the unreadable one
        audit = (await admin.get("/api/audit", params={"limit": 500})).json()["items"]
        assert audit and {e["storeId"] for e in audit} == {"aurora"}
        assert "message.open" in {e["action"] for e in audit}
    async with console.client(headers=bearer(console.admin_token)) as platform:
        everything = (await platform.get("/api/audit", params={"limit": 500})).json()["items"]
        assert {"aurora", "bazar", None} <= {e["storeId"] for e in everything}
    async with console.client() as client:
        page = Session(client, tenants.cookies["aurora-admin"], SESSION)
        for path in ("/stores", "/dlq", "/audit", "/users", "/tokens"):
            response = await page.get(path)
            assert response.status_code == 200, path
            assert "bazar" not in response.text, path
        assert "The audit chain verifies" in (await page.get("/audit")).text


async def test_a_removed_store_takes_effect_on_the_next_request(
    console: Console, accounts: Accounts, tenants: Tenants
) -> None:
    name = f"both-{uuid.uuid4().hex[:6]}"
    await accounts.add_user(name, Role.SUPPORT, PASSWORD, by=TESTS, stores=list(STORES))
    made, _ = await accounts.create_token(name, "tests", by=TESTS)
    conversation = f"/api/orders/{tenants.orders['bazar']}/conversation"
    async with console.client() as client, console.client(headers=bearer(made.value)) as api:
        page = Session(client, set_cookie(await sign_in(client, name), SESSION) or "", SESSION)
        assert (await api.get(conversation)).status_code == 200
        assert (await page.get(f"/orders/{tenants.orders['bazar']}")).status_code == 200
        await accounts.change_scope(name, add=[], remove=["bazar"], by=TESTS)
        assert (await api.get(conversation)).status_code == 404
        assert (await page.get(f"/orders/{tenants.orders['bazar']}")).status_code == 404
        assert (await page.get(f"/orders/{tenants.orders['aurora']}")).status_code == 200


async def test_a_token_narrows_its_user_and_expires(
    console: Console, accounts: Accounts, tenants: Tenants
) -> None:
    narrowed, _ = await accounts.create_token(ADMIN, "aurora only", by=TESTS, stores=["aurora"])
    async with console.client(headers=bearer(narrowed.value)) as api:
        assert (await api.get(f"/api/orders/{tenants.orders['aurora']}/conversation")).is_success
        assert (
            await api.get(f"/api/orders/{tenants.orders['bazar']}/conversation")
        ).status_code == 404
        assert (await api.get("/api/me")).json()["stores"] == ["aurora"]
    with pytest.raises(AccountError, match="narrow"):
        await accounts.create_token("aurora-support", "wider", by=TESTS, stores=["bazar"])
    brief, token = await accounts.create_token(
        "aurora-support", "brief", by=TESTS, lifetime=timedelta(seconds=1)
    )
    assert token.expires_at is not None
    async with console.client(headers=bearer(brief.value)) as api:
        assert (await api.get("/api/me")).status_code == 200
        await asyncio.sleep(1.2)
        expired = await api.get("/api/me")
        assert expired.status_code == 401 and expired.headers["www-authenticate"].startswith(
            "Bearer"
        )


async def test_a_scoped_admin_manages_its_stores_users_only_and_never_widens_a_scope(
    console: Console, accounts: Accounts, tenants: Tenants
) -> None:
    admin = await accounts.from_token(tenants.tokens["aurora-admin"])
    assert admin is not None and admin.scope.stores == frozenset({"aurora"})
    for stores in (["bazar"], [], ["aurora", "bazar"]):
        with pytest.raises(AccountError):
            await accounts.add_user(
                f"x-{uuid.uuid4().hex[:6]}", Role.SUPPORT, None, by=admin, stores=stores
            )
    mine, _ = await accounts.add_user(
        f"aurora-new-{uuid.uuid4().hex[:6]}", Role.SUPPORT, None, by=admin, stores=["aurora"]
    )
    names = {u.name for u in await accounts.users(admin)}
    assert mine.name in names and "aurora-support" in names
    assert not names & {"bazar-support", "bazar-admin", ADMIN}
    for act in (
        accounts.set_role("bazar-support", Role.ADMIN, by=admin),
        accounts.set_password("bazar-support", None, by=admin),
        accounts.remove_user(ADMIN, by=admin),
        accounts.create_token("bazar-admin", "theirs", by=admin),
        accounts.change_scope(mine.name, add=["bazar"], remove=[], by=admin),
    ):
        with pytest.raises(AccountError):
            await act
    theirs = next(t for t in await accounts.tokens(TESTS) if t.user == "bazar-support")
    assert not await accounts.revoke_token(theirs.token_id, by=admin)
    assert {t.user for t in await accounts.tokens(admin)} <= names


async def test_parallel_wrong_passwords_make_at_most_the_allowed_checks(
    console: Console, accounts: Accounts
) -> None:
    name = f"guessed-{uuid.uuid4().hex[:6]}"
    await accounts.add_user(name, Role.SUPPORT, PASSWORD, by=TESTS)
    async with from_address(console, "127.0.0.7") as client:
        forms = [await client.get("/login") for _ in range(20)]
        answers = await asyncio.gather(
            *(_post_login(client, form, name, f"wrong guess {n}") for n, form in enumerate(forms))
        )
    codes = sorted(a.status_code for a in answers)
    checked = codes.count(401)
    limit = console.settings.web_login_max_failures_per_user
    assert 1 <= checked <= limit and codes.count(429) == 20 - checked, codes
    async with from_address(console, "127.0.0.8") as client:
        assert (await sign_in(client, name)).status_code == 303  # elsewhere, not locked out


async def _post_login(
    client: httpx.AsyncClient, form: httpx.Response, name: str, password: str
) -> httpx.Response:
    from tests.web.conftest import hidden_token

    cookie = f"__Host-ct-login={set_cookie(form, '__Host-ct-login')}"
    data = {"login_token": hidden_token(form.text, "login_token"), "username": name,
            "password": password, "next": "/orders"}  # fmt: skip
    return await client.post("/login", data=data, headers={"Cookie": cookie})


async def test_the_current_password_check_is_throttled_like_a_sign_in(
    console: Console, accounts: Accounts
) -> None:
    name = f"changer-{uuid.uuid4().hex[:6]}"
    await accounts.add_user(name, Role.SUPPORT, PASSWORD, by=TESTS)
    async with from_address(console, "127.0.0.9") as client:
        session = Session(client, set_cookie(await sign_in(client, name), SESSION) or "", SESSION)
        token = await session.csrf("/account")
        form = {
            "csrf_token": token,
            "new": "another long password",
            "again": "another long password",
        }
        codes = [
            (await session.post("/account/password", form | {"current": f"wrong {n}"})).status_code
            for n in range(4)
        ]
        assert codes == [422, 422, 422, 429]
        right = await session.post("/account/password", form | {"current": PASSWORD})
        assert right.status_code == 429  # the right one too, until the wait is over


@pytest.fixture
async def audit_db(web_settings: Settings) -> AsyncIterator[tuple[Settings, mongo.Database]]:
    settings = web_settings.model_copy(update={"mongo_db": f"ct_audit_{uuid.uuid4().hex[:8]}"})
    client = mongo.connect(settings, app_name="ct-audit-tests")
    try:
        yield settings, client[settings.mongo_db]
    finally:
        await client.drop_database(settings.mongo_db)
        await client.close()


async def _ct(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CT_MONGO_DB": settings.mongo_db, "CT_LOG_FORMAT": "json"}
    return await asyncio.to_thread(
        subprocess.run, [CT, *args], capture_output=True, text=True, env=env, timeout=60
    )


async def test_ct_audit_verify_finds_the_entry_edited_in_the_database(
    audit_db: tuple[Settings, mongo.Database],
) -> None:
    settings, db = audit_db
    audit = AuditLog(db)
    opened = [
        audit.record("message.open", operator="sam", store="aurora", orderId=f"o{n}")
        for n in range(6)
    ]
    await asyncio.gather(  # parallel writers still make one unbroken chain per store
        *opened,
        audit.record("user.add", operator="ada", store=None, user="sam"),
        audit.record("store.settings", operator="ada", store="bazar", maskType="soft"),
    )
    intact = await _ct(settings, "audit", "verify")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "aurora: ok, 6 entries" in intact.stdout and "(platform): ok, 1 entries" in intact.stdout
    await db["audit"].update_one({"_id": "aurora:000000000003"}, {"$set": {"operator": "mallory"}})
    broken = await _ct(settings, "audit", "verify")
    assert broken.returncode == 1
    assert "aurora: BROKEN at entry 3 (id aurora:000000000003)" in broken.stdout
    assert "bazar: ok" in broken.stdout


async def test_ct_manages_scoped_users_and_tokens(
    audit_db: tuple[Settings, mongo.Database],
) -> None:
    settings, _ = audit_db
    added = await _ct(settings, "user", "add", "amy", "--role", "support", "--store", "aurora",
                      "--store", "bazar", "--generate")  # fmt: skip
    assert added.returncode == 0 and "aurora, bazar" in added.stdout, added.stderr
    scoped = await _ct(settings, "user", "scope", "amy", "--remove", "bazar")
    assert scoped.returncode == 0 and "user amy: aurora" in scoped.stdout, scoped.stderr
    last = await _ct(settings, "user", "scope", "amy", "--remove", "aurora")
    assert last.returncode == 2 and "no store" in last.stderr
    listed = await _ct(settings, "user", "list")
    assert "stores: aurora" in listed.stdout
    made = await _ct(settings, "token", "create", "--user", "amy", "--expires-in", "12h")
    assert made.returncode == 0 and "until" in made.stderr, made.stderr
    never = await _ct(settings, "token", "create", "--user", "amy", "--expires-in", "never",
                      "--store", "aurora")  # fmt: skip
    assert never.returncode == 0 and "never expires" in never.stderr
    wrong = await _ct(settings, "token", "create", "--user", "amy", "--expires-in", "1w")
    assert wrong.returncode == 2 and "not a duration" in wrong.stderr
    tokens = await _ct(settings, "token", "list")
    assert "expires never" in tokens.stdout and "stores aurora" in tokens.stdout
    assert "stores (its user's)" in tokens.stdout and "used never" in tokens.stdout


async def test_the_audit_page_says_when_a_chain_does_not_verify(
    console: Console, web_db: mongo.Database, admin: Session, tenants: Tenants
) -> None:
    audit, store = AuditLog(web_db), f"tamper-{uuid.uuid4().hex[:6]}"
    for n in range(3):
        await audit.record("store.settings", operator="ada", store=store, step=n)
    await web_db["audit"].update_one({"_id": f"{store}:000000000002"}, {"$set": {"step": 7}})
    page = await admin.get("/audit")
    assert "The audit chain does not verify" in page.text
    assert f"<strong>{store}</strong> breaks at entry 2" in page.text
    async with console.client() as client:  # a store's admin sees its own chains only
        own = await Session(client, tenants.cookies["aurora-admin"], SESSION).get("/audit")
        assert "The audit chain verifies" in own.text and store not in own.text


async def test_a_scoped_admins_pages_give_only_its_own_stores(
    console: Console, tenants: Tenants
) -> None:
    async with console.client() as client:
        page = Session(client, tenants.cookies["aurora-admin"], SESSION)
        csrf = await page.csrf("/users")
        name = f"paged-{uuid.uuid4().hex[:6]}"
        wider = await page.post("/users", {"csrf_token": csrf, "name": name, "role": "support",
                                           "stores": "aurora bazar"})  # fmt: skip
        assert wider.status_code == 422 and "stores that are yours" in wider.text
        platform = await page.post("/users", {"csrf_token": csrf, "name": name, "role": "admin"})
        assert platform.status_code == 422 and "platform admin" in platform.text
        added = await page.post("/users", {"csrf_token": csrf, "name": name, "role": "support",
                                           "stores": "aurora"})  # fmt: skip
        assert added.status_code == 200 and f"Password for <strong>{name}</strong>" in added.text
        theirs = await page.post("/tokens", {"csrf_token": csrf, "user": "bazar-support"})
        assert theirs.status_code == 422 and "No user named" in theirs.text
        made = await page.post("/tokens", {"csrf_token": csrf, "user": name, "expires_in": "12h"})
        assert made.status_code == 200 and "shown only now" in made.text
