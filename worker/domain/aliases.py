"""Alias formats and the policy that picks them for an order's participants.

A hard alias hides the real address completely; a soft alias keeps it readable inside a per-order
subdomain, so a customer still recognises the store. Every alias lives in (a subdomain of) the
tracker's own domain, which is what lets the relay accept mail for it.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final, Protocol

from worker.domain.errors import Unprocessable

MAX_LOCAL_PART: Final = 64
MAX_ADDRESS: Final = 254
MAX_DOMAIN: Final = 253
MAX_LABEL: Final = 63
SOFT_TOKEN_CHARS: Final = 13

# RFC 5322 atext: what a local part may hold without quoting. Quoted local parts are legal but rare
# and cannot be embedded in a soft alias, so they are refused rather than half-supported.
ATOM: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
DOT_ATOM: Final = rf"{ATOM}(?:\.{ATOM})*"
_DOT_ATOM = re.compile(DOT_ATOM)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_TOKEN = re.compile(rf"[0-9a-f]{{{SOFT_TOKEN_CHARS}}}")


class InvalidAddress(Unprocessable, ValueError):
    """An email address we cannot use; the message says which rule it breaks."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"invalid address: {rule}")


@dataclass(frozen=True, slots=True)
class Party:
    """Who an alias stands for: the real address (normalised) and the display name."""

    address: str
    name: str | None


class MaskType(StrEnum):
    HARD = "hard"
    SOFT = "soft"


SOFT_MASK_WARNING: Final = (
    "Soft aliases are readable and reversible by design: anyone who sees one can read the real "
    "address off it (john@example.com-<token>.<domain>). Use Hard where that matters."
)


class AliasExpiry(StrEnum):
    """When a store's order aliases stop working."""

    FIXED = "fixed"  # CT_ALIAS_TTL_DAYS after they were made
    ORDER_FLOW = "orderFlow"  # CT_ALIAS_GRACE_DAYS after DELIVERED or CANCELED


@dataclass(frozen=True, slots=True)
class AliasWindow:
    """Under the orderFlow policy: until when an order's aliases work, and why.

    `closed` once the order reached DELIVERED or CANCELED; `event_at` is the time of the status
    event the window was computed from, so that an older event (a replay) never moves it.
    """

    expires_at: datetime
    closed: bool
    event_at: datetime


def next_window(
    previous: AliasWindow | None, *, terminal: bool, at: datetime, ttl_days: int, grace_days: int
) -> AliasWindow | None:
    """The window after a status event at `at`; None when the event does not move it.

    While the order moves, its aliases work `ttl_days` past its latest status; from DELIVERED or
    CANCELED on, `grace_days` past it, and any later status event opens another grace period
    (a return, a re-delivery), whatever that status is. An event older than the last one moves
    nothing, nor does one that gives the same window (a redelivery, or another status at the
    same instant that closes nothing), so the caller has nothing to write.
    """
    _require_aware(at)
    if previous is not None and at < previous.event_at:
        return None
    closed = terminal or (previous is not None and previous.closed)
    window = AliasWindow(at + timedelta(days=grace_days if closed else ttl_days), closed, at)
    return None if window == previous else window


def normalize_address(addr: str) -> str:
    """The canonical form aliases and hashes are built from: trimmed, lowercase, syntax-checked."""
    address = addr.strip().lower()
    if address.count("@") != 1:
        raise InvalidAddress("an address needs exactly one '@'")
    local, domain = address.split("@")
    if not local:
        raise InvalidAddress("the local part (before '@') is empty")
    if not _DOT_ATOM.fullmatch(local):
        raise InvalidAddress("the local part has characters that need quoting, or stray dots")
    if len(local.encode()) > MAX_LOCAL_PART:
        raise InvalidAddress(f"the local part is longer than {MAX_LOCAL_PART} octets")
    _check_domain(domain)
    if len(address.encode()) > MAX_ADDRESS:
        raise InvalidAddress(f"the address is longer than {MAX_ADDRESS} octets")
    return address


def _check_domain(domain: str) -> None:
    if not domain:
        raise InvalidAddress("the domain (after '@') is empty")
    if len(domain.encode()) > MAX_DOMAIN:
        raise InvalidAddress(f"the domain is longer than {MAX_DOMAIN} octets")
    for label in domain.split("."):
        if len(label) > MAX_LABEL:
            raise InvalidAddress(f"the domain label {label[:16]!r}... is longer than {MAX_LABEL}")
        if not _LABEL.fullmatch(label):
            raise InvalidAddress(
                f"the domain label {label!r} is not letters, digits and inner hyphens"
            )


def new_hard_alias(domain: str) -> str:
    """An opaque alias: 122 random bits, so collisions need no coordination in practice."""
    return f"{uuid.uuid4().hex}@{domain.lower()}"


def new_soft_token() -> str:
    """The per-order token that makes soft aliases unguessable and unique per order."""
    return secrets.token_hex(7)[:SOFT_TOKEN_CHARS]


def soft_alias(real: str, token: str, domain: str) -> str | None:
    """`john@example.com` -> `john@example.com-<token>.<domain>`, or None when that is no address.

    None covers an unusable real address as well as a result over the RFC 5321 limits: the caller
    then falls back to a hard alias, which always fits.
    """
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"a soft token is {SOFT_TOKEN_CHARS} lowercase hex characters")
    try:
        local, real_domain = normalize_address(real).split("@")
        return normalize_address(f"{local}@{real_domain}-{token}.{domain.lower()}")
    except InvalidAddress:
        return None


@dataclass(frozen=True, slots=True)
class OrderAliasPlan:
    """The aliases an order's two participants get; `mask` is the type actually used."""

    mask: MaskType
    customer_alias: str
    store_alias: str
    token: str | None
    fell_back: bool


def choose_order_aliases(
    mask: MaskType, customer_email: str, store_email: str, domain: str
) -> OrderAliasPlan:
    """Aliases for a new order; a soft order whose aliases do not both fit becomes all hard.

    Mixing types within one order would reveal one party's address but not the other's, which is
    harder to explain to a store than "this order is fully masked".
    """
    if mask == MaskType.SOFT:
        token = new_soft_token()
        customer = soft_alias(customer_email, token, domain)
        store = soft_alias(store_email, token, domain)
        # Equal aliases would make the two parties indistinguishable to the relay.
        if customer is not None and store is not None and customer != store:
            return OrderAliasPlan(MaskType.SOFT, customer, store, token, fell_back=False)
    return OrderAliasPlan(
        MaskType.HARD,
        new_hard_alias(domain),
        new_hard_alias(domain),
        token=None,
        fell_back=mask == MaskType.SOFT,
    )


def new_reverse_alias(mask: MaskType, sender_email: str, token: str | None, domain: str) -> str:
    """The alias an external party (a carrier, say) is seen as inside an order's conversation."""
    if mask == MaskType.SOFT and token is not None:
        alias = soft_alias(sender_email, token, domain)
        if alias is not None:
            return alias
    return new_hard_alias(domain)


# The `_id` an erased soft alias is kept under: its keyed hash, which reveals nothing.
ERASED_ALIAS_PREFIX: Final = "erased:"


def erased_alias_id(alias_hash: str) -> str:
    """Where an erased customer's soft alias is kept, so mail to it is still refused as erased:
    under the keyed hash of the alias, found again by hashing a recipient the same way."""
    if not alias_hash or ERASED_ALIAS_PREFIX in alias_hash:
        raise ValueError("an erased alias is kept under the keyed hash of its address")
    return ERASED_ALIAS_PREFIX + alias_hash


def is_erased_alias_id(alias_id: str) -> bool:
    return alias_id.startswith(ERASED_ALIAS_PREFIX)


def is_alias_domain(address: str, domain: str) -> bool:
    """True for addresses in `domain` or its subdomains, where soft aliases live."""
    _, at, address_domain = address.strip().rpartition("@")
    if not at:
        return False
    address_domain = address_domain.lower().rstrip(".")
    domain = domain.lower().rstrip(".")
    return address_domain == domain or address_domain.endswith("." + domain)


def expires_at(created_at: datetime, ttl_days: int) -> datetime:
    _require_aware(created_at)
    if ttl_days < 1:
        raise ValueError("an alias lives at least one day")
    return created_at + timedelta(days=ttl_days)


def is_expired(expires_at: datetime, now: datetime) -> bool:
    """Expired from the instant `expires_at` on, so a TTL of N days is never N days plus a bit."""
    _require_aware(expires_at)
    _require_aware(now)
    return now >= expires_at


def _require_aware(value: datetime) -> None:
    # Comparing naive and aware datetimes raises, and a naive one silently means local time.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
