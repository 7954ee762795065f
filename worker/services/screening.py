"""The relay's sender screening for one message at DATA: authentication, then the abuse limits.

A collaborator of `RelayHandler`, built once per relay process from the settings: it owns the
DNS client (and its TTL cache), the SPF/DKIM/DMARC authenticator and the rate limiter, and turns
the pure rules of `domain.screening` into one answer the handler acts on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from worker.adapters.dns import DnsClient, parse_resolvers
from worker.adapters.mail_auth import SenderAuthenticator
from worker.core.config import Settings
from worker.domain.abuse import OverLimit, RateKeys, RateLimit, SlidingWindowLimiter
from worker.domain.abuse import marketing_markers as find_markers
from worker.domain.auth_results import authentication_results
from worker.domain.headers import ParsedMessage
from worker.domain.routing import AliasView, OrderParties
from worker.domain.screening import (
    AUTHENTICATION_OFF,
    Accepted,
    claimed_sender,
    rate_refused,
    screen,
)
from worker.domain.sender_auth import Authentication, Refused

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Screened:
    outcome: Accepted | Refused
    # The value of the forward's Authentication-Results; None when authentication is off.
    authentication_results: str | None
    # False for a rate-limit refusal already recorded in this window: answer, record nothing.
    record: bool = True
    # What a rate-limit record's event id derives from (None: the message itself is the cause).
    cause: str | None = None


class SenderScreen:
    def __init__(
        self,
        *,
        authenticator: SenderAuthenticator | None,
        limiter: SlidingWindowLimiter,
        authserv_id: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._authenticator = authenticator
        self._limiter = limiter
        self._authserv_id = authserv_id
        self._now = monotonic

    @classmethod
    def from_settings(cls, settings: Settings) -> SenderScreen:
        window = float(settings.relay_rate_window_s)
        limiter = SlidingWindowLimiter(
            [
                RateLimit("alias", settings.relay_rate_per_alias, window),
                RateLimit("domain", settings.relay_rate_per_domain, window),
                RateLimit("ip", settings.relay_rate_per_ip, window),
            ]
        )
        authenticator = None
        if settings.relay_sender_auth == "enforce":
            servers = parse_resolvers(settings.dns_resolvers) if settings.dns_resolvers else None
            dns_client = DnsClient(
                servers, timeout_s=settings.dns_timeout_s, cache_size=settings.dns_cache_size
            )
            authenticator = SenderAuthenticator(dns_client)
        else:
            log.warning(
                "sender_authentication_off",
                detail="CT_RELAY_SENDER_AUTH=off: From and the envelope are trusted unverified;"
                " anyone can write as an order's customer or store. Only for a relay that"
                " receives from trusted internal systems alone.",
            )
        return cls(authenticator=authenticator, limiter=limiter, authserv_id=settings.domain)

    async def screen(
        self,
        message: ParsedMessage | bytes,
        *,
        client_ip: str,
        mail_from: str,
        helo: str,
        recipient: AliasView,
        parties: OrderParties,
    ) -> Screened:
        message = ParsedMessage.of(message)
        auth: Authentication | None = None
        if self._authenticator is not None:
            auth = await self._authenticator.authenticate(
                message, client_ip=client_ip, mail_from=mail_from, helo=helo
            )
        header = authentication_results(self._authserv_id, auth) if auth else None
        header_from = message.header("From")
        outcome = screen(
            auth,
            recipient_role=recipient.role,
            claim=claimed_sender(parties, header_from, mail_from),
            marketing_markers=find_markers(message),
        )
        if isinstance(outcome, Refused) and outcome.code < 500:
            # A lookup that failed is no refusal of the message: the sender retries it later.
            return Screened(outcome, header, record=False)
        if isinstance(outcome, Accepted) and not outcome.external:
            return Screened(outcome, header)
        # External senders and refused ones alike count against the limits, so that a sender
        # trying addresses one after another is slowed down, whatever the replies say.
        keys = RateKeys(recipient.address, _sending_domain(auth, header_from, mail_from), client_ip)
        counted = self._limiter.admit(keys, now=self._now())
        if isinstance(counted, OverLimit):
            cause = f"rate-limited|{counted.scope}|{counted.key}|{counted.window_started}"
            verdicts = outcome.verdicts if isinstance(outcome, Accepted) else auth_summary(auth)
            return Screened(rate_refused(counted, verdicts), header, counted.record, cause)
        return Screened(outcome, header)


def auth_summary(auth: Authentication | None) -> str:
    return auth.summary() if auth is not None else AUTHENTICATION_OFF


def _sending_domain(auth: Authentication | None, header_from: str | None, mail_from: str) -> str:
    """Whom a domain limit counts: From's organisational domain, else the domain it names."""
    if auth is not None and auth.org_domain:
        return auth.org_domain
    address = (header_from or "").rpartition("<")[2].rstrip(">") or mail_from.strip("<>")
    return address.rpartition("@")[2].strip().lower()
