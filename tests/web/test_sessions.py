"""Sign-in, sessions, CSRF, fixation, logout and login throttling, over real HTTP."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.web.conftest import (
    ADMIN,
    PASSWORD,
    TESTS,
    Console,
    Session,
    hidden_token,
    set_cookie,
    sign_in,
)
from worker.domain.accounts import Role
from worker.services.accounts import Accounts

pytestmark = pytest.mark.stack
SESSION = "__Host-ct-session"


def from_address(console: Console, address: str) -> httpx.AsyncClient:
    """A client whose connections come from another loopback address: another 'IP'."""
    return console.client(transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_the_session_cookie_is_host_only_secure_httponly_and_strict(
    console: Console,
) -> None:
    async with console.client() as client:
        response = await sign_in(client, ADMIN)
    assert response.status_code == 303 and response.headers["location"] == "/orders"
    header = next(h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION))
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite"} <= attributes
    assert "samesite=strict" in header.lower() and "domain" not in attributes


async def test_security_headers_forbid_inline_script_framing_and_sniffing(
    admin: Session,
) -> None:
    response = await admin.get("/orders")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp  # default-src 'none' governs
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "<script" not in response.text


async def test_a_planted_session_id_is_never_adopted_at_login(console: Console) -> None:
    planted = "attacker-chosen-session-value-0123456789abcdef"
    async with console.client() as client:
        response = await sign_in(client, ADMIN, cookies=f"{SESSION}={planted}")
        issued = set_cookie(response, SESSION)
        assert issued and issued != planted
        still_out = await client.get("/orders", headers={"Cookie": f"{SESSION}={planted}"})
        assert still_out.status_code == 401


async def test_signing_in_again_ends_the_browsers_previous_session(
    console: Console, admin: Session
) -> None:
    async with console.client() as client:
        response = await sign_in(client, ADMIN, cookies=f"{SESSION}={admin.cookie}")
        fresh = set_cookie(response, SESSION)
    assert fresh and fresh != admin.cookie
    assert (await admin.get("/orders")).status_code == 401


async def test_logout_needs_its_token_and_then_ends_the_session_on_the_server(
    admin: Session,
) -> None:
    refused = await admin.post("/logout", {})
    assert refused.status_code == 403 and (await admin.get("/orders")).status_code == 200
    out = await admin.post("/logout", {"csrf_token": await admin.csrf()})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert set_cookie(out, SESSION) is None  # cleared in the browser...
    assert (await admin.get("/orders")).status_code == 401  # ...and dead on the server


async def test_a_form_without_its_csrf_token_or_from_another_site_is_refused(
    console: Console, admin: Session
) -> None:
    store = f"csrf-{uuid.uuid4().hex[:6]}"
    form = {"mask": "soft", "alias_expiry": "fixed"}
    assert (await admin.post(f"/stores/{store}", form)).status_code == 403
    wrong = await admin.post(f"/stores/{store}", form | {"csrf_token": "guessed"})
    assert wrong.status_code == 403 and "CSRF" in wrong.text
    token = await admin.csrf()
    cross = await admin.client.post(
        f"/stores/{store}",
        data=form | {"csrf_token": token},
        headers=admin.headers | {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    page = await admin.get(f"/stores/{store}")
    assert 'value="hard" checked' in page.text  # nothing changed
    ok = await admin.post(f"/stores/{store}", form | {"csrf_token": token})
    assert ok.status_code == 303


async def test_a_login_form_without_its_token_is_refused(console: Console) -> None:
    async with console.client() as client:
        response = await client.post(
            "/login", data={"username": ADMIN, "password": PASSWORD, "login_token": "x"}
        )
    assert response.status_code == 403 and set_cookie(response, SESSION) is None


async def test_login_redirects_only_inside_the_console(console: Console) -> None:
    async with console.client() as client:
        form = await client.get("/login", params={"next": "//evil.example/steal"})
        assert 'value="/orders"' in form.text
        token = hidden_token(form.text, "login_token")
        response = await client.post(
            "/login",
            data={"login_token": token, "username": ADMIN, "password": PASSWORD,
                  "next": "https://evil.example/"},
            headers={"Cookie": f"__Host-ct-login={set_cookie(form, '__Host-ct-login')}"},
        )  # fmt: skip
    assert response.headers["location"] == "/orders"


async def test_wrong_passwords_lock_the_user_out_from_that_address_only(
    console: Console, accounts: Accounts
) -> None:
    name = f"lock-{uuid.uuid4().hex[:6]}"
    await accounts.add_user(name, Role.SUPPORT, PASSWORD, by=TESTS)
    async with from_address(console, "127.0.0.2") as client:
        for _ in range(3):
            assert (await sign_in(client, name, "not the password")).status_code == 401
        locked = await sign_in(client, name)  # the right password, too late
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        assert set_cookie(locked, SESSION) is None
    async with from_address(console, "127.0.0.3") as client:
        # A guesser somewhere else does not lock the user out of their own sign-in.
        assert (await sign_in(client, name)).status_code == 303


async def test_one_address_guessing_many_names_is_locked_out_but_not_others(
    console: Console, accounts: Accounts
) -> None:
    victim = f"victim-{uuid.uuid4().hex[:6]}"
    await accounts.add_user(victim, Role.SUPPORT, PASSWORD, by=TESTS)
    async with from_address(console, "127.0.0.4") as client:
        for n in range(6):
            assert (await sign_in(client, f"guess-{n}", "password123")).status_code == 401
        assert (await sign_in(client, victim)).status_code == 429
    async with from_address(console, "127.0.0.5") as client:
        assert (await sign_in(client, victim)).status_code == 303


async def test_changing_a_password_ends_the_users_other_sessions_and_tokens(
    console: Console, accounts: Accounts
) -> None:
    name = f"change-{uuid.uuid4().hex[:6]}"
    await accounts.add_user(name, Role.SUPPORT, PASSWORD, by=TESTS)
    made, _ = await accounts.create_token(name, "tests", by=TESTS)
    api = console.client(headers={"Authorization": f"Bearer {made.value}"})
    async with console.client() as client, api:
        assert (await api.get("/api/me")).status_code == 200
        other = Session(client, set_cookie(await sign_in(client, name), SESSION) or "", SESSION)
        cookie = set_cookie(await sign_in(client, name), SESSION)
        session = Session(client, cookie or "", SESSION)
        token = await session.csrf("/account")
        short = await session.post(
            "/account/password", {"csrf_token": token, "current": PASSWORD, "new": "short",
                                  "again": "short"},
        )  # fmt: skip
        assert short.status_code == 422 and "at least 12" in short.text
        changed = await session.post(
            "/account/password",
            {"csrf_token": token, "current": PASSWORD, "new": "another long password",
             "again": "another long password"},
        )  # fmt: skip
        assert changed.status_code == 200 and "other sessions have ended" in changed.text
        assert (await session.get("/orders")).status_code == 200  # this session goes on
        assert (await other.get("/orders")).status_code == 401  # the other one has ended
        assert (await api.get("/api/me")).status_code == 401  # and so has the token
        assert (await sign_in(client, name, "another long password")).status_code == 303
