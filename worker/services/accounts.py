"""Console accounts as the CLI and the web console use them: users, logins, sessions, tokens.

Every change to a user or a token is audited. Password hashing runs in a thread, two at a time:
argon2 takes 64 MiB and tens of milliseconds per hash by design, which must neither stall the
event loop nor let a burst of logins take the machine's memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from worker.adapters.audit import AuditLog
from worker.adapters.sessions import LoginThrottle, SessionRecord, Sessions
from worker.adapters.users import ApiToken, ApiTokens, User, Users
from worker.domain.accounts import (
    AccountError,
    NewToken,
    Role,
    check_new_password,
    generate_password,
    hash_password,
    needs_rehash,
    normalize_user_name,
    parse_api_token,
    verify_password,
)

log = structlog.get_logger(__name__)
HASHING_AT_ONCE = 2


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: a user through a browser session or through an API token."""

    name: str
    role: Role
    session: SessionRecord | None = None
    token_id: str | None = None

    def may(self, required: Role) -> bool:
        return self.role.allows(required)

    @property
    def operator(self) -> str:
        """How the audit log names this principal."""
        return f"{self.name} (token {self.token_id})" if self.token_id else self.name


@dataclass(frozen=True, slots=True)
class LoggedIn:
    secret: str  # the cookie's value; only its digest is stored
    session: SessionRecord
    user: User


@dataclass(frozen=True, slots=True)
class LoginRefused:
    retry_after: float  # > 0: throttled; 0: wrong name or password


class Accounts:
    def __init__(
        self,
        *,
        users: Users,
        tokens: ApiTokens,
        sessions: Sessions,
        throttle: LoginThrottle,
        audit: AuditLog,
    ) -> None:
        self._users = users
        self._tokens = tokens
        self._sessions = sessions
        self._throttle = throttle
        self._audit = audit
        self._hashing = asyncio.Semaphore(HASHING_AT_ONCE)

    async def _hash(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(hash_password, password)

    async def _verify(self, stored: str | None, password: str) -> bool:
        async with self._hashing:
            return await asyncio.to_thread(verify_password, stored, password)

    async def login(self, name: str, password: str, address: str) -> LoggedIn | LoginRefused:
        """Check a password, throttled per name and per address; a new session on success."""
        try:
            name = normalize_user_name(name)
        except AccountError:
            name = name.strip().lower()[:64]  # throttled all the same, never matches a user
        wait = await self._throttle.retry_after(name, address)
        if wait > 0:
            log.warning("login_throttled", user=name, retry_after_s=round(wait))
            return LoginRefused(wait)
        user = await self._users.get(name)
        ok = await self._verify(user.password_hash if user else None, password[:1024])
        if user is None or not ok or user.disabled:
            await self._throttle.failed(name, address)
            log.info("login_failed", user=name)
            return LoginRefused(0.0)
        await self._throttle.succeeded(name)
        if needs_rehash(user.password_hash):
            await self._users.update(name, passwordHash=await self._hash(password))
        secret, session = await self._sessions.start(name)
        log.info("login", user=name)
        return LoggedIn(secret, session, user)

    async def logout(self, secret: str) -> None:
        await self._sessions.end(secret)

    async def from_session(self, secret: str) -> Principal | None:
        session = await self._sessions.find(secret)
        if session is None:
            return None
        user = await self._users.get(session.user)
        if user is None or user.disabled:
            return None
        return Principal(user.name, user.role, session=session)

    async def from_token(self, value: str) -> Principal | None:
        token_id = parse_api_token(value)
        token = await self._tokens.authenticate(token_id, value) if token_id else None
        user = await self._users.get(token.user) if token else None
        if token is None or user is None or user.disabled:
            return None
        return Principal(user.name, user.role, token_id=token.token_id)

    async def add_user(
        self, name: str, role: Role, password: str | None, *, by: str
    ) -> tuple[User, str | None]:
        """Add a user; returns it and the generated password when none was given."""
        name = normalize_user_name(name)
        generated = None if password else generate_password()
        user = await self._users.add(name, role, await self._hash(password or generated or ""))
        await self._audit.record("user.add", operator=by, user=name, role=role.value)
        return user, generated

    async def set_password(self, name: str, password: str | None, *, by: str) -> str | None:
        """Set (or generate) a user's password and end their sessions; returns a generated one."""
        generated = None if password else generate_password()
        if password:
            check_new_password(password)
        if not await self._users.update(
            name, passwordHash=await self._hash(password or generated or "")
        ):
            raise AccountError(f"no user named {name!r}")
        await self._sessions.end_all(name)
        await self._audit.record("user.password", operator=by, user=name)
        return generated

    async def change_own_password(self, principal: Principal, current: str, new: str) -> None:
        user = await self._users.get(principal.name)
        if user is None or not await self._verify(user.password_hash, current):
            raise AccountError("the current password is not right")
        check_new_password(new)
        await self._users.update(user.name, passwordHash=await self._hash(new))
        await self._sessions.end_all(user.name)
        await self._audit.record("user.password", operator=principal.operator, user=user.name)

    async def set_role(self, name: str, role: Role, *, by: str) -> None:
        if not await self._users.update(name, role=role.value):
            raise AccountError(f"no user named {name!r}")
        await self._sessions.end_all(name)
        await self._audit.record("user.role", operator=by, user=name, role=role.value)

    async def set_disabled(self, name: str, disabled: bool, *, by: str) -> None:
        if not await self._users.update(name, disabled=disabled):
            raise AccountError(f"no user named {name!r}")
        if disabled:
            await self._sessions.end_all(name)
            await self._tokens.revoke_all(name)
        await self._audit.record(
            "user.disable" if disabled else "user.enable", operator=by, user=name
        )

    async def remove_user(self, name: str, *, by: str) -> None:
        if not await self._users.remove(name):
            raise AccountError(f"no user named {name!r}")
        await self._sessions.end_all(name)
        await self._tokens.revoke_all(name)
        await self._audit.record("user.remove", operator=by, user=name)

    async def users(self) -> list[User]:
        return await self._users.all()

    async def create_token(self, user: str, label: str, *, by: str) -> tuple[NewToken, ApiToken]:
        name = normalize_user_name(user)
        if await self._users.get(name) is None:
            raise AccountError(f"no user named {name!r}: add it first (`ct user add`)")
        made, token = await self._tokens.create(name, label.strip()[:100])
        await self._audit.record("token.create", operator=by, user=name, token=token.token_id)
        return made, token

    async def revoke_token(self, token_id: str, *, by: str) -> bool:
        revoked = await self._tokens.revoke(token_id.strip())
        if revoked:
            await self._audit.record("token.revoke", operator=by, token=token_id.strip())
        return revoked

    async def tokens(self) -> list[ApiToken]:
        return await self._tokens.all()

    async def sweep_sessions(self) -> int:
        return await self._sessions.sweep()
