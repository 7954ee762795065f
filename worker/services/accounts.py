"""Console accounts as the CLI and the web console use them: users, logins, sessions, tokens.

Every change to a user or a token is audited, in the audit chain of each store the user has
(a platform operator's in the platform chain). Password hashing runs in a thread, two at a
time: argon2 takes 64 MiB and tens of milliseconds per hash by design, which must neither stall
the event loop nor let a burst of logins take the machine's memory.

Who may manage whom: a platform admin anyone; a scoped admin the users whose stores are all
its own, and their tokens, and never beyond its own stores. Someone it may not manage answers
as a user that does not exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

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
from worker.domain.scope import PLATFORM, Scope, ScopeError, changed_scope, normalize_store_id

log = structlog.get_logger(__name__)
HASHING_AT_ONCE = 2
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: a user through a browser session or through an API token."""

    name: str
    role: Role
    scope: Scope = PLATFORM
    session: SessionRecord | None = None
    token_id: str | None = None

    def may(self, required: Role) -> bool:
        return self.role.allows(required)

    @property
    def operator(self) -> str:
        """How the audit log names this principal."""
        return f"{self.name} (token {self.token_id})" if self.token_id else self.name


def platform_operator(name: str) -> Principal:
    """Whoever runs `ct` on the deployment's machine: a platform admin."""
    return Principal(name, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class LoggedIn:
    secret: str  # the cookie's value; only its digest is stored
    session: SessionRecord
    user: User


@dataclass(frozen=True, slots=True)
class LoginRefused:
    retry_after: float  # > 0: throttled; 0: wrong name or password


class Throttled(AccountError):
    """Too many wrong passwords from here: try again in `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many wrong passwords: try again later")
        self.retry_after = retry_after


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
        """Check a password, throttled per name and address and per address; a session on success.

        The attempt is counted before the password is checked, so parallel guesses count too.
        """
        try:
            name = normalize_user_name(name)
        except AccountError:
            name = name.strip().lower()[:64]  # throttled all the same, never matches a user
        attempt = await self._throttle.begin(name, address)
        if attempt.wait > 0:
            await self._throttle.withdraw(attempt)
            log.warning("login_throttled", user=name, retry_after_s=round(attempt.wait))
            return LoginRefused(attempt.wait)
        user = await self._users.get(name)
        ok = await self._verify(user.password_hash if user else None, password[:1024])
        if user is None or not ok or user.disabled:
            log.info("login_failed", user=name)
            return LoginRefused(0.0)
        await self._throttle.succeeded(attempt)
        if needs_rehash(user.password_hash):
            await self._users.update(name, passwordHash=await self._hash(password))
        secret, session = await self._sessions.start(name)
        log.info("login", user=name)
        return LoggedIn(secret, session, user)

    async def logout(self, secret: str) -> None:
        await self._sessions.end(secret)

    async def from_session(self, secret: str) -> Principal | None:
        """The session's user as it is now: role and stores are read on every request."""
        session = await self._sessions.find(secret)
        if session is None:
            return None
        user = await self._users.get(session.user)
        if user is None or user.disabled:
            return None
        return Principal(user.name, user.role, user.scope, session=session)

    async def from_token(self, value: str) -> Principal | None:
        """The token's user as it is now, narrowed to the token's stores; expired: None."""
        token_id = parse_api_token(value)
        token = await self._tokens.authenticate(token_id, value) if token_id else None
        user = await self._users.get(token.user) if token else None
        if token is None or user is None or user.disabled:
            return None
        return Principal(
            user.name, user.role, user.scope.narrowed(token.stores), token_id=token.token_id
        )

    async def _audit_user(self, action: str, user: User, by: Principal, **details: Any) -> None:
        """One entry per store the user has, so each store's chain and admins see it."""
        stores = user.scope.listed()
        for store in stores if stores else [None]:
            await self._audit.record(
                action, operator=by.operator, store=store, user=user.name, **details
            )

    async def _managed(self, name: str, by: Principal) -> User:
        """The user `by` may manage; anyone else is 'no such user' (no existence oracle)."""
        user = await self._users.get(normalize_user_name(name))
        if user is None or not by.may(Role.ADMIN) or not by.scope.covers(user.scope):
            raise AccountError(f"no user named {name.strip().lower()[:64]!r}")
        return user

    def _granted(self, stores: list[str] | None, by: Principal) -> Scope:
        """The scope a new user or token gets: what was asked, if `by` holds all of it."""
        if not stores:
            if not by.scope.platform:
                raise AccountError(
                    "name the store(s) this user is for (--store): only a platform admin makes "
                    "platform operators"
                )
            return PLATFORM
        try:
            scope = Scope(frozenset(normalize_store_id(s) for s in stores))
        except ScopeError as exc:
            raise AccountError(str(exc)) from None
        if not by.scope.covers(scope):
            raise AccountError("you can only give a user stores that are yours")
        return scope

    async def add_user(
        self,
        name: str,
        role: Role,
        password: str | None,
        *,
        by: Principal,
        stores: list[str] | None = None,
    ) -> tuple[User, str | None]:
        """Add a user; returns it and the generated password when none was given."""
        name = normalize_user_name(name)
        scope = self._granted(stores, by)
        generated = None if password else generate_password()
        user = await self._users.add(
            name, role, await self._hash(password or generated or ""), scope
        )
        await self._audit_user("user.add", user, by, role=role.value)
        return user, generated

    async def _end_access(self, name: str, *, keep_session: str | None = None) -> None:
        """End the user's sessions (but `keep_session`) and revoke every token of theirs."""
        await self._sessions.end_all(name, keep=keep_session)
        await self._tokens.revoke_all(name)

    async def set_password(self, name: str, password: str | None, *, by: Principal) -> str | None:
        """Set (or generate) a user's password, ending their sessions and tokens."""
        user = await self._managed(name, by)
        generated = None if password else generate_password()
        if password:
            check_new_password(password)
        await self._users.update(
            user.name, passwordHash=await self._hash(password or generated or "")
        )
        await self._end_access(user.name)
        await self._audit_user("user.password", user, by)
        return generated

    async def change_own_password(
        self, principal: Principal, current: str, new: str, *, address: str
    ) -> None:
        """Throttled like a sign-in; ends the user's other sessions and every token of theirs."""
        attempt = await self._throttle.begin(principal.name, address)
        if attempt.wait > 0:
            await self._throttle.withdraw(attempt)
            raise Throttled(attempt.wait)
        user = await self._users.get(principal.name)
        if user is None or not await self._verify(user.password_hash, current[:1024]):
            raise AccountError("the current password is not right")
        await self._throttle.succeeded(attempt)
        check_new_password(new)
        await self._users.update(user.name, passwordHash=await self._hash(new))
        keep = principal.session.session_id if principal.session else None
        await self._end_access(user.name, keep_session=keep)
        await self._audit_user("user.password", user, principal)

    async def set_role(self, name: str, role: Role, *, by: Principal) -> None:
        user = await self._managed(name, by)
        await self._users.update(user.name, role=role.value)
        await self._sessions.end_all(user.name)
        await self._audit_user("user.role", user, by, role=role.value)

    async def change_scope(
        self, name: str, *, add: list[str], remove: list[str], by: Principal
    ) -> User:
        """Give a user stores or take some away; takes effect on their next request."""
        user = await self._managed(name, by)
        try:
            scope = changed_scope(user.scope, add=add, remove=remove, by=by.scope)
        except ScopeError as exc:
            raise AccountError(str(exc)) from None
        await self._users.update(user.name, stores=scope.listed())
        # In the chain of every store it concerns: those it had and those it has now (a platform
        # operator's scope is the platform chain).
        chains: set[str | None] = set()
        for each in (user.scope, scope):
            chains |= set(each.stores) if each.stores is not None else {None}
        for store in sorted(chains, key=lambda c: c or ""):
            await self._audit.record(
                "user.scope",
                operator=by.operator,
                store=store,
                user=user.name,
                added=sorted(add),
                removed=sorted(remove),
            )
        return dataclasses.replace(user, scope=scope)

    async def set_disabled(self, name: str, disabled: bool, *, by: Principal) -> None:
        user = await self._managed(name, by)
        await self._users.update(user.name, disabled=disabled)
        if disabled:
            await self._end_access(user.name)
        await self._audit_user("user.disable" if disabled else "user.enable", user, by)

    async def remove_user(self, name: str, *, by: Principal) -> None:
        user = await self._managed(name, by)
        await self._users.remove(user.name)
        await self._end_access(user.name)
        await self._audit_user("user.remove", user, by)

    async def users(self, by: Principal) -> list[User]:
        """The users `by` may manage: every one for a platform admin."""
        return [u for u in await self._users.all(by.scope.listed()) if by.scope.covers(u.scope)]

    async def create_token(
        self,
        user: str,
        label: str,
        *,
        by: Principal,
        stores: list[str] | None = None,
        lifetime: timedelta | None = DEFAULT_TOKEN_LIFETIME,
    ) -> tuple[NewToken, ApiToken]:
        """A token of `user`'s, narrowed to `stores` if given, ending after `lifetime`."""
        try:
            owner = await self._managed(user, by)
        except AccountError:
            raise AccountError(
                f"no user named {user.strip().lower()[:64]!r}: add it first (`ct user add`)"
            ) from None
        narrowed = self._granted(stores, by) if stores else None
        if narrowed is not None and not owner.scope.covers(narrowed):
            raise AccountError(
                f"{owner.name} is not scoped to every one of those stores: a token can only "
                "narrow its user's stores"
            )
        made, token = await self._tokens.create(
            owner.name,
            label.strip()[:100],
            stores=narrowed.stores if narrowed else None,
            lifetime=lifetime,
        )
        await self._audit_user("token.create", owner, by, token=token.token_id)
        return made, token

    async def revoke_token(self, token_id: str, *, by: Principal) -> bool:
        token = await self._tokens.get(token_id.strip())
        if token is None:
            return False
        try:
            owner = await self._managed(token.user, by)
        except AccountError:
            return False  # another store's token: as if there were none
        revoked = await self._tokens.revoke(token.token_id)
        if revoked:
            await self._audit_user("token.revoke", owner, by, token=token.token_id)
        return revoked

    async def tokens(self, by: Principal) -> list[ApiToken]:
        """The tokens of the users `by` may manage."""
        if by.scope.platform:
            return await self._tokens.of_users(None)
        return await self._tokens.of_users([u.name for u in await self.users(by)])

    async def sweep_sessions(self) -> int:
        return await self._sessions.sweep()
