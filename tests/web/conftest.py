"""The console under test: the real app on a real socket, over the story the workers told.

Everything here is package-scoped: the story runs once (a few seconds) and one console serves
every API and browser test, and both are gone before other packages run (some of them patch
asyncio.sleep, which a server running beside them would spin on). Tests that change state use
names of their own.
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import Capture
from tests.support.dkim import DkimKeys
from tests.support.dns import LoopbackDns
from tests.support.smtp import FaultyCapture
from tests.web.story import Story, tell
from worker.adapters import mongo
from worker.adapters.kafka import ensure_topics
from worker.adapters.smtp_server import bound_port, start_smtp_server
from worker.apps.web import WebService, build_accounts
from worker.core.config import Settings, load_settings
from worker.core.crypto import AddressCipher
from worker.domain.accounts import Role
from worker.domain.aliases import SystemClock
from worker.services.accounts import Accounts, platform_operator

PORTS = range(18100, 18999)
ADMIN, SUPPORT = "ada", "sam"
PASSWORD = "a long and correct password"
TESTS = platform_operator("tests")
_HIDDEN = re.compile(r'name="(csrf_token|login_token)" value="([^"]+)"')


def free_web_port(skip: int = 0) -> int:
    """A free port in the range this work may serve on (18000-18999)."""
    for port in PORTS:
        if port == skip:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18100-18999")


@pytest.fixture(scope="package")
def web_settings(
    stack: None, encryption_key: str, dns_server: LoopbackDns, dkim_keys: DkimKeys
) -> Settings:
    run = uuid.uuid4().hex[:10]
    return load_settings(
        **dkim_keys.settings(),
        topic_order_status=f"w-{run}-orders",
        topic_timeline=f"w-{run}-timeline",
        topic_dlq=f"w-{run}-dlq",
        group_notifier=f"w-{run}-notifier",
        group_projector=f"w-{run}-projector",
        mongo_db=f"ct_web_{run}",
        encryption_key=encryption_key,
        topic_partitions=1,
        shutdown_grace_s=5,
        retry_max_delay_s=1,
        relay_port=(relay := free_web_port()),
        web_port=free_web_port(skip=relay),
        web_login_max_failures_per_user=3,
        web_login_max_failures_per_address=6,
        dns_resolvers=dns_server.resolver,
    )


@pytest.fixture(scope="package")
async def web_db(web_settings: Settings) -> AsyncIterator[mongo.Database]:
    client = mongo.connect(web_settings, app_name="ct-web-tests")
    try:
        yield client[web_settings.mongo_db]
    finally:
        await client.drop_database(web_settings.mongo_db)
        await client.close()


@pytest.fixture(scope="package")
async def story(
    web_settings: Settings,
    web_db: mongo.Database,
    tmp_path_factory: pytest.TempPathFactory,
    dns_server: LoopbackDns,
) -> AsyncIterator[Story]:
    await ensure_topics(web_settings, 1, 1)
    handler = FaultyCapture(tmp_path_factory.mktemp("web-mail"))
    server = await start_smtp_server(
        handler, "127.0.0.1", 0, hostname="web-sink", data_size_limit=64 * 1024 * 1024
    )
    try:
        settings = web_settings.model_copy(update={"smtp_port": bound_port(server)})
        yield await tell(settings, Capture(handler, bound_port(server)), web_db, dns_server)
    finally:
        server.close()
        await server.wait_closed()
        handler.close()


@pytest.fixture(scope="package")
def accounts(web_db: mongo.Database, web_settings: Settings) -> Accounts:
    return build_accounts(web_db, web_settings, SystemClock())


@dataclass
class Console:
    url: str
    settings: Settings
    story: Story
    admin_token: str
    support_token: str
    app: FastAPI

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, follow_redirects=False, **kwargs)


@pytest.fixture(scope="package")
async def console(
    web_settings: Settings, story: Story, accounts: Accounts
) -> AsyncIterator[Console]:
    await accounts.add_user(ADMIN, Role.ADMIN, PASSWORD, by=TESTS)
    await accounts.add_user(SUPPORT, Role.SUPPORT, PASSWORD, by=TESTS)
    admin_token, _ = await accounts.create_token(ADMIN, "tests", by=TESTS)
    support_token, _ = await accounts.create_token(SUPPORT, "tests", by=TESTS)
    service = WebService(web_settings, AddressCipher(web_settings.data_keys()))
    stopping = asyncio.Event()
    task = asyncio.create_task(service.run(stopping))
    async with asyncio.timeout(30):
        while not service.is_ready():
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    assert service.app is not None
    try:
        yield Console(
            f"http://127.0.0.1:{service.port}",
            web_settings,
            story,
            admin_token.value,
            support_token.value,
            service.app,
        )
    finally:
        stopping.set()
        async with asyncio.timeout(30):
            await task


def hidden_token(html: str, name: str = "csrf_token") -> str:
    for field_name, value in _HIDDEN.findall(html):
        if field_name == name:
            return str(value)
    raise AssertionError(f"no {name} in the page")


@dataclass
class Session:
    """A signed-in browser without a browser: the session cookie sent by hand (it is Secure,
    and httpx, rightly, sends Secure cookies over https only)."""

    client: httpx.AsyncClient
    cookie: str
    cookie_name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"{self.cookie_name}={self.cookie}"}

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.headers, **kwargs)

    async def post(self, path: str, data: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.client.post(path, data=data, headers=self.headers, **kwargs)

    async def csrf(self, path: str = "/orders") -> str:
        return hidden_token((await self.get(path)).text)


def set_cookie(response: httpx.Response, name: str) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.split(";", 1)[0].split("=", 1)[1].strip('"') or None
    return None


async def sign_in(
    client: httpx.AsyncClient, name: str, password: str = PASSWORD, *, cookies: str = ""
) -> httpx.Response:
    """The login form as a browser sends it: GET for its token and cookie, then POST."""
    form = await client.get("/login")
    token = hidden_token(form.text, "login_token")
    login_cookie = "__Host-ct-login"
    value = set_cookie(form, login_cookie)
    cookie = f"{login_cookie}={value}" + (f"; {cookies}" if cookies else "")
    return await client.post(
        "/login",
        data={"login_token": token, "username": name, "password": password, "next": "/orders"},
        headers={"Cookie": cookie},
    )


@pytest.fixture
async def admin(console: Console) -> AsyncIterator[Session]:
    async with console.client() as client:
        response = await sign_in(client, ADMIN)
        cookie = set_cookie(response, "__Host-ct-session")
        assert response.status_code == 303 and cookie, response.text[:500]
        yield Session(client, cookie, "__Host-ct-session")


@pytest.fixture
async def support(console: Console) -> AsyncIterator[Session]:
    async with console.client() as client:
        response = await sign_in(client, SUPPORT)
        cookie = set_cookie(response, "__Host-ct-session")
        assert response.status_code == 303 and cookie
        yield Session(client, cookie, "__Host-ct-session")


def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


STORES = ("aurora", "bazar")


@dataclass
class Tenants:
    """Two stores as tenants: a support user and an admin scoped to each, their tokens and
    sessions, and for each store an order, a message, a kept attachment's message and a dead
    letter that belong to it. `ada` (ADMIN) is the platform admin."""

    orders: dict[str, str]  # store -> order id
    messages: dict[str, str]  # store -> an event id of a kept message of that order
    attached: dict[str, str]  # store -> an event id of a message with an attachment, or ""
    letters: dict[str, int]  # store -> offset of a dead letter naming that store
    storeless_letter: int  # the story's unreadable record: platform operators only
    tokens: dict[str, str]  # "aurora-support" -> bearer token
    cookies: dict[str, str]  # "aurora-support" -> session cookie

    @staticmethod
    def other(store: str) -> str:
        return STORES[1 - STORES.index(store)]


async def _dead_letter(settings: Settings, event_bytes: bytes, key: str) -> None:
    """A record refused for its content (it reads fine, so it names its store)."""
    from worker.adapters.kafka import make_producer

    producer = make_producer(settings, "ct-web-tests")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic_dlq,
            key=key.encode(),
            value=event_bytes,
            headers=[
                ("ct.dlq.topic", settings.topic_timeline.encode()),
                ("ct.dlq.partition", b"0"),
                ("ct.dlq.offset", b"0"),
                ("ct.dlq.component", b"projector"),
                ("ct.dlq.reason", f"refused in the tests ({key})".encode()),
            ],
        )
    finally:
        await producer.stop()


@pytest.fixture(scope="package")
async def tenants(console: Console, accounts: Accounts) -> Tenants:
    from tests.helpers import CODEC
    from tests.support.events import order_event

    story = console.story
    orders = {"aurora": story.hard_order, "bazar": story.soft_order}
    tokens, cookies = {}, {}
    for store in STORES:
        for role in Role:
            name = f"{store}-{role.value}"
            await accounts.add_user(name, role, PASSWORD, by=TESTS, stores=[store])
            made, _ = await accounts.create_token(name, "tests", by=TESTS)
            tokens[name] = made.value
            async with console.client() as client:
                response = await sign_in(client, name)
            cookie = set_cookie(response, "__Host-ct-session")
            assert response.status_code == 303 and cookie, response.text[:300]
            cookies[name] = cookie
        event = order_event(order_id=f"dead-{store}", store_id=store)
        await _dead_letter(console.settings, CODEC.encode(event), f"dead-{store}")
    platform = {"Authorization": f"Bearer {console.admin_token}"}
    messages: dict[str, str] = {}
    attached: dict[str, str] = {}
    letters: dict[str, int] = {}
    async with console.client(headers=platform) as client:
        for store, order in orders.items():
            thread = (await client.get(f"/api/orders/{order}/conversation")).json()
            kept = [m for m in thread["messages"] if m["bodyKept"]]
            messages[store] = kept[0]["id"]
            attached[store] = next((m["id"] for m in kept if m["hasAttachment"]), "")
        async with asyncio.timeout(30):
            while len(letters) < len(STORES):
                items = (await client.get("/api/dlq")).json()["items"]
                letters = {i["storeId"]: i["offset"] for i in items if i["storeId"]}
        storeless = next(i["offset"] for i in items if i["storeId"] is None)
    return Tenants(orders, messages, attached, letters, storeless, tokens, cookies)
