"""The relay's screening of one message before it is routed: the sender rules, then the abuse rules.

Order matters and is fixed here: authentication first (`sender_auth.judge_sender`), because it
decides whether the sender is a participant or an external sender; the marketing refusal and
the rate limits apply to external senders only (the order's authenticated customer and store
are never limited). The rate limiter keeps state, so the relay asks it for every message that
`screen` did not accept from an authenticated participant (external senders, and refusals: a
sender guessing addresses is slowed like a flood), then turns an `OverLimit` into a refusal
with `rate_refused`.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr

from worker.contracts.events import ParticipantRole
from worker.domain.abuse import OverLimit
from worker.domain.replies import MARKETING_REFUSED, RATE_LIMITED
from worker.domain.routing import OrderParties
from worker.domain.sender_auth import (
    AsExternal,
    Authentication,
    Refused,
    Trusted,
    judge_sender,
)

AUTHENTICATION_OFF = "sender-authentication-off"


@dataclass(frozen=True, slots=True)
class Accepted:
    """Route the message. `sender_verified` False: never as the participant it claims to be."""

    sender_verified: bool
    external: bool  # counted by the rate limits
    verdicts: str  # for the forward's timeline entry: the SPF/DKIM/DMARC results, no address


@dataclass(frozen=True, slots=True)
class Claim:
    """Which participant a message says it comes from, and whether `From` itself says so."""

    role: ParticipantRole | None
    in_from: bool


def claimed_sender(parties: OrderParties, header_from: str | None, envelope_from: str) -> Claim:
    """The order's party the sender claims to be, read as `decide_route` reads it: by From's
    real address, or by the envelope's only when From names no address. An alias never makes a
    claim (our own addresses coming back are a loop, see `decide_route`)."""
    _, from_address = parseaddr(header_from or "")
    if "@" in from_address:
        by_from = parties.by_real_address(from_address)
        return Claim(by_from.role if by_from else None, in_from=True)
    by_envelope = parties.by_real_address(envelope_from.strip().strip("<>"))
    return Claim(by_envelope.role if by_envelope else None, in_from=False)


def screen(
    auth: Authentication | None,
    *,
    recipient_role: ParticipantRole,
    claim: Claim,
    marketing_markers: tuple[str, ...],
) -> Accepted | Refused:
    """Whether and how a message goes on; `auth` None when sender authentication is off."""
    claimed_role = claim.role
    treatment = judge_sender(
        auth,
        recipient_role=recipient_role,
        claimed_role=claimed_role,
        claimed_in_from=claim.in_from,
    )
    if isinstance(treatment, Refused):
        return treatment
    verdicts = auth.summary() if auth is not None else AUTHENTICATION_OFF
    participant = claimed_role in (ParticipantRole.CUSTOMER, ParticipantRole.STORE)
    external = isinstance(treatment, AsExternal) or not participant
    if external and marketing_markers:
        return Refused(
            MARKETING_REFUSED, f"marketing-refused ({', '.join(marketing_markers)}); {verdicts}"
        )
    if isinstance(treatment, AsExternal):
        verdicts = treatment.reason
    return Accepted(isinstance(treatment, Trusted), external, verdicts)


def rate_refused(over: OverLimit, verdicts: str) -> Refused:
    """The 451 for a message over a limit; the reason names the scope, never the key (an IP)."""
    return Refused(RATE_LIMITED, f"rate-limited (per {over.scope}); {verdicts}")
