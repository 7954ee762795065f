"""Who a sender is allowed to be: SPF/DKIM/DMARC verdicts in, the relay's treatment out.

Pure: the verdicts are plain values the authentication adapter computed over DNS
(`worker.adapters.mail_auth`), so every rule here is tested without a resolver. The rules are the
ones alias relays that users trust apply (SimpleLogin checks DMARC before it matches a reply to a
mailbox; addy.io forwards a reply only on a DMARC allow):

- a sender is an order's customer or store only when the message is authenticated for the `From`
  address: DMARC pass for its domain or, where that domain publishes no DMARC record, an SPF pass
  for a `MAIL FROM` in the organisational domain of `From`, or a DKIM pass with `d=` aligned;
- a DMARC `p=reject` or `p=quarantine` failure is refused for any sender, with the one reply
  `NOT_AUTHENTICATED`;
- to a reverse alias, anyone but the authenticated customer gets that same reply;
- anyone else unauthenticated is forwarded as an external sender under its own reverse alias,
  whatever it claims: whether a claimed address is a participant's never shows;
- a lookup that failed (timeout, SERVFAIL) where the outcome could depend on it is a `451 4.4.3`,
  for every sender of that domain alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from worker.contracts.events import ParticipantRole
from worker.domain.replies import DNS_TEMPORARY, NOT_AUTHENTICATED


class Result(StrEnum):
    """RFC 8601 result keywords (a subset that covers SPF, DKIM and DMARC)."""

    PASS = "pass"  # noqa: S105 - an RFC 8601 result keyword, not a password
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class DmarcPolicy(StrEnum):
    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class SpfVerdict:
    result: Result
    identity: Literal["mailfrom", "helo"]
    domain: str  # the domain checked: MAIL FROM's, or HELO's for a null sender
    aligned: bool  # same organisational domain as `From` (relaxed alignment)


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    result: Result
    domain: str  # d=
    selector: str  # s=
    aligned: bool  # d= in the organisational domain of `From` (relaxed alignment)


@dataclass(frozen=True, slots=True)
class DmarcVerdict:
    """`result` NONE means the From domain (and its organisational domain) has no record."""

    result: Result
    policy: DmarcPolicy | None  # the policy that applies to this From domain (p= or sp=)


@dataclass(frozen=True, slots=True)
class Authentication:
    from_domain: str | None  # None: no single parseable From address
    org_domain: str | None  # From's organisational domain (Public Suffix List)
    spf: SpfVerdict
    dkim: tuple[DkimVerdict, ...]
    dmarc: DmarcVerdict

    def authenticated(self) -> bool:
        """True when the message is proven to come from its `From` domain."""
        if self.from_domain is None:
            return False
        if self.dmarc.result is Result.PASS:
            return True
        if self.dmarc.result is not Result.NONE:
            return False
        return (self.spf.aligned and self.spf.result is Result.PASS) or any(
            d.aligned and d.result is Result.PASS for d in self.dkim
        )

    def undecided(self) -> bool:
        """True when a failed lookup could have changed `authenticated()` from False to True."""
        if self.authenticated():
            return False
        if self.dmarc.result is Result.TEMPERROR:
            return True
        if self.dmarc.result not in (Result.NONE, Result.FAIL):
            return False
        return (self.spf.aligned and self.spf.result is Result.TEMPERROR) or any(
            d.aligned and d.result is Result.TEMPERROR for d in self.dkim
        )

    def summary(self) -> str:
        """The verdicts for a timeline entry or a log line: domains only, never an address."""
        dkim = " ".join(f"dkim={d.result}(d={d.domain})" for d in self.dkim) or "dkim=none"
        policy = f"(p={self.dmarc.policy})" if self.dmarc.policy else ""
        return (
            f"spf={self.spf.result}({self.spf.identity}={self.spf.domain or '-'}) {dkim}"
            f" dmarc={self.dmarc.result}{policy}(from={self.from_domain or '-'})"
        )


@dataclass(frozen=True, slots=True)
class Trusted:
    """The sender is who `From` says (authenticated, or authentication is off)."""


@dataclass(frozen=True, slots=True)
class AsExternal:
    """Forward, but as an external sender under its own reverse alias, never as the participant."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    reply: str
    reason: str  # for the timeline: a keyword, then the verdicts; no address

    @property
    def code(self) -> int:
        return int(self.reply[:3])


SenderTreatment = Trusted | AsExternal | Refused


def judge_sender(  # noqa: PLR0911 - one return per rule reads better than a table here
    auth: Authentication | None,
    *,
    recipient_role: ParticipantRole,
    claimed_role: ParticipantRole | None,
    claimed_in_from: bool = True,
) -> SenderTreatment:
    """How the relay treats this message's sender.

    `auth` None: sender authentication is off (`CT_RELAY_SENDER_AUTH=off`). `recipient_role`:
    the role of the alias written to (EXTERNAL is a reverse alias). `claimed_role`: the order's
    customer or store when `From` (or, without one, the envelope) is that participant's address;
    None for anyone else. `claimed_in_from` False: only the envelope names the participant, and
    authentication speaks for `From` alone, so the claim cannot be verified.

    No oracle: only a claim that authentication *confirms* changes the outcome. Every other
    sender, whatever address it claims and whether that address is a participant's real one,
    is judged by its From domain's verdicts alone: the same DMARC policy for every sender of a
    domain, the same `NOT_AUTHENTICATED` reply, the same external treatment.
    """
    if auth is None:
        return Trusted()
    verdicts = auth.summary()
    if auth.dmarc.result is Result.TEMPERROR or auth.undecided():
        return Refused(DNS_TEMPORARY, f"dns-temporary-failure; {verdicts}")
    participant_claim = claimed_in_from and claimed_role in (
        ParticipantRole.CUSTOMER,
        ParticipantRole.STORE,
    )
    if participant_claim and auth.authenticated():
        return Trusted()
    if auth.dmarc.result is Result.FAIL and auth.dmarc.policy in (
        DmarcPolicy.REJECT,
        DmarcPolicy.QUARANTINE,
    ):
        return Refused(NOT_AUTHENTICATED, f"dmarc-policy-{auth.dmarc.policy}; {verdicts}")
    if recipient_role is ParticipantRole.EXTERNAL:
        # A reverse alias carries the customer's voice: only the authenticated customer.
        return Refused(NOT_AUTHENTICATED, f"sender-not-authenticated; {verdicts}")
    if auth.authenticated():
        return Trusted()  # an external sender that is who its From says
    return AsExternal(f"sender-not-authenticated; {verdicts}")
