"""`ct run web`: the console and the HTTP API, served by uvicorn in the worker's own event loop.

Uvicorn rather than granian because it runs as a coroutine inside our loop (`Server.serve`),
beside the other services of `ct run all`, under the same signal handling and graceful shutdown;
granian runs its own process and loop. The socket is bound here first, so a port in use is a
one-line error instead of uvicorn's exit from inside a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from datetime import timedelta

import structlog
import uvicorn
from fastapi import FastAPI

from worker.adapters import audit as audit_adapter
from worker.adapters import messages as messages_adapter
from worker.adapters import mongo
from worker.adapters import sessions as sessions_adapter
from worker.adapters import users as users_adapter
from worker.adapters.audit import AuditLog
from worker.adapters.dlq import DeadLetterQueue
from worker.adapters.messages import MessageStore
from worker.adapters.order_queries import OrderQueries
from worker.adapters.sessions import LoginThrottle, Sessions
from worker.adapters.users import ApiTokens, Users
from worker.apps.builder import Stores
from worker.contracts.codec import SingleObjectCodec
from worker.core.config import ConfigError, Settings
from worker.core.crypto import AddressCipher
from worker.core.service import Service
from worker.domain.accounts import LoginLimits
from worker.domain.aliases import Clock, SystemClock
from worker.services.accounts import Accounts
from worker.services.console import Console
from worker.services.subjects import DeadLetterSeal
from worker.web.app import create_app
from worker.web.security import CookiePolicy

log = structlog.get_logger(__name__)
SWEEP_EVERY_S = 3600.0
WEB_INDEXES = {
    **users_adapter.INDEXES,
    **sessions_adapter.INDEXES,
    **messages_adapter.INDEXES,
    **audit_adapter.INDEXES,
}


class _EmbeddedServer(uvicorn.Server):
    """Uvicorn without its own signal handlers: `ct run` owns SIGTERM/SIGINT for every service."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_accounts(db: mongo.Database, settings: Settings, clock: Clock) -> Accounts:
    """The console's accounts, as the web service and the `ct user`/`ct token` commands use them."""
    return Accounts(
        users=Users(db, clock),
        tokens=ApiTokens(db, clock),
        sessions=Sessions(
            db,
            idle=timedelta(minutes=settings.web_session_idle_minutes),
            max_age=timedelta(hours=settings.web_session_max_hours),
            clock=clock,
        ),
        throttle=LoginThrottle(
            db,
            LoginLimits(
                per_user=settings.web_login_max_failures_per_user,
                per_address=settings.web_login_max_failures_per_address,
                window=timedelta(seconds=settings.web_login_window_s),
            ),
            clock,
        ),
        audit=AuditLog(db),
    )


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"CT_WEB_HOST/CT_WEB_PORT: cannot listen on {host}:{port} ({exc.strerror})"
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class WebService(Service):
    name = "web"

    def __init__(
        self, settings: Settings, cipher: AddressCipher, clock: Clock | None = None
    ) -> None:
        self._settings = settings
        self._cipher = cipher
        self._clock = clock or SystemClock()
        self._server: _EmbeddedServer | None = None
        self.port: int | None = None
        self.app: FastAPI | None = None

    def is_ready(self) -> bool:
        return self._server is not None and self._server.started

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self._settings
        sock = bind(settings.web_host, settings.web_port)
        self.port = int(sock.getsockname()[1])
        client = mongo.connect(settings, app_name="ct-web")
        sweeper: asyncio.Task[None] | None = None
        try:
            db = client[settings.mongo_db]
            dialect = await mongo.prepare(db, settings.mongo_dialect)
            await mongo.ensure_indexes(db, WEB_INDEXES)
            accounts = build_accounts(db, settings, self._clock)
            stores = Stores(db, dialect, settings, self._cipher, self._clock, cache_aliases=False)
            messages = stores.messages
            self.app = app = create_app(
                console=self._console(stores),
                accounts=accounts,
                cookies=CookiePolicy(
                    secure=settings.web_secure_cookies,
                    session_max_age_s=settings.web_session_max_hours * 3600,
                ),
                ready=lambda: _answers(db),
            )
            config = uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                proxy_headers=bool(settings.web_forwarded_allow_ips),
                forwarded_allow_ips=settings.web_forwarded_allow_ips or None,
                server_header=False,
                timeout_graceful_shutdown=int(settings.shutdown_grace_s),
                lifespan="off",
            )
            self._server = _EmbeddedServer(config)
            sweeper = asyncio.create_task(_sweep(accounts, messages), name="web-sweeper")
            serving = asyncio.create_task(self._server.serve(sockets=[sock]), name="uvicorn")
            log.info("web_listening", host=settings.web_host, port=self.port)
            stop = asyncio.create_task(stopping.wait())
            await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
            self._server.should_exit = True
            stop.cancel()
            await serving
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            sock.close()
            await client.close()

    def _console(self, stores: Stores) -> Console:
        settings = self._settings
        return Console(
            db=stores.db,
            aliases=stores.aliases,
            messages=stores.messages,
            audit=stores.audit,
            stores=stores.store_settings,
            orders=OrderQueries(stores.db),
            dead_letters=DeadLetterQueue(
                settings,
                stores.db,
                self._clock,
                stores.dialect,
                open_value=DeadLetterSeal(SingleObjectCodec(), stores.subject_keys).open,
            ),
            suppression=stores.suppression,
            domain=settings.domain,
            subject_requests=stores.subject_requests,
        )


async def _answers(db: mongo.Database) -> bool:
    try:
        async with asyncio.timeout(2):
            await db.command("ping")
    except Exception:  # noqa: BLE001 - any failure means "not ready", which is the answer
        return False
    return True


async def _sweep(accounts: Accounts, messages: MessageStore) -> None:
    """Hourly: delete expired sessions, and messages past CT_MESSAGE_RETENTION_DAYS."""
    while True:
        try:
            sessions = await accounts.sweep_sessions()
            purged = await messages.purge_expired()
            log.info("web_swept", sessions=sessions, messages=purged)
        except Exception as exc:
            if not mongo.is_transient(exc):
                log.exception("web_sweep_failed")
        await asyncio.sleep(SWEEP_EVERY_S)
