"""Who may write to an alias: the route a message takes, or why it is refused.

Pure: the relay looks the recipient alias up, calls `decide_route`, and turns a `Refusal` or a
`MessageRejected` into the SMTP reply it carries.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email.utils import parseaddr

from worker.contracts.events import Direction, ParticipantRole
from worker.domain.aliases import is_alias_domain
from worker.domain.headers import decode_words, without_controls
from worker.domain.replies import (
    ALIAS_EXPIRED,
    BOUNCE_NOT_RELAYED,
    LOOP_DETECTED,
    NOT_AUTHENTICATED,
)


@dataclass(frozen=True, slots=True)
class AliasView:
    address: str
    role: ParticipantRole
    order_id: str
    store_id: str
    real_address: str
    display_name: str | None
    expired: bool


@dataclass(frozen=True, slots=True)
class OrderParties:
    customer: AliasView
    store: AliasView
    externals: tuple[AliasView, ...] = ()

    def all(self) -> tuple[AliasView, ...]:
        return (self.customer, self.store, *self.externals)

    def by_real_address(self, address: str) -> AliasView | None:
        """The participant whose real address this is (never matched by an alias)."""
        address = address.strip().lower()
        return next((p for p in self.all() if address and address == p.real_address), None)

    def by_address(self, address: str) -> AliasView | None:
        """The participant this real address or alias belongs to."""
        address = address.strip().lower()
        return next((p for p in self.all() if address in (p.real_address, p.address.lower())), None)


@dataclass(frozen=True, slots=True)
class Route:
    recipient_alias: AliasView
    deliver_to: str
    sender_alias: str
    sender_name: str | None
    sender_role: ParticipantRole
    direction: Direction
    # Lets the rewrite mask a just-created external party that `OrderParties` may not list yet.
    sender_real_address: str


@dataclass(frozen=True, slots=True)
class NeedsReverseAlias:
    """Get-or-create the reverse alias of (order, sender_address), then decide again with it."""

    sender_address: str
    sender_name: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    text: str

    @classmethod
    def of(cls, reply: str) -> Refusal:
        return cls(int(reply[:3]), reply)


def decide_route(  # noqa: PLR0911 - one return per rule, in the order they apply
    recipient: AliasView,
    parties: OrderParties,
    envelope_from: str,
    header_from: str | None,
    reverse_alias_for_sender: AliasView | None,
    *,
    domain: str,
    sender_verified: bool = True,
    signed_by_us: bool = False,
) -> Route | NeedsReverseAlias | Refusal:
    """Who the mail goes to and whom it appears to come from; `domain` is the alias domain.

    `sender_verified` False (a sender that authentication did not confirm, see
    `sender_auth.judge_sender`): it is never matched to a participant, so it goes out under a
    reverse alias of its own, its name marked external. `signed_by_us`: the message carries a
    DKIM signature of our own domain, so it is one of our forwards coming back.
    """
    if recipient.order_id != parties.customer.order_id:
        raise ValueError("the recipient alias belongs to another order")
    envelope = envelope_from.strip().strip("<>").lower()
    name, from_address = _parse_from(header_from)
    if recipient.expired or not envelope:
        # A null reverse path marks a bounce, and bounces quote the failed message together with
        # its recipient's real address: relaying one would unmask that participant.
        return Refusal.of(ALIAS_EXPIRED if recipient.expired else BOUNCE_NOT_RELAYED)
    if signed_by_us or is_our_own(envelope, header_from, domain=domain):
        return Refusal.of(LOOP_DETECTED)
    if recipient.role is ParticipantRole.EXTERNAL:
        # Both are forgeable; requiring both at least stops a stranger who sets only one of them.
        customer = parties.customer.real_address
        if sender_verified and envelope == from_address == customer:
            return _route(recipient, parties.customer, name, parties)
        return Refusal.of(NOT_AUTHENTICATED)
    # From identifies the sender, not the envelope: mail sent through a provider carries the
    # provider's bounce address as envelope sender. The envelope names it only without a From.
    address = from_address or envelope
    sender = parties.by_real_address(address) if sender_verified else None
    if sender is None:
        sender = reverse_alias_for_sender
        if sender is None:
            return NeedsReverseAlias(address, name)
        if (sender.real_address, sender.order_id) != (address, recipient.order_id):
            raise ValueError("the reverse alias is not this sender's in this order")
    if sender.address == recipient.address:
        # Writing to one's own alias has no use, and the masked copy coming back would tell
        # the sender whether an address it wrote in the body is a participant's real one.
        return Refusal.of(LOOP_DETECTED)
    return _route(recipient, sender, name, parties)


def is_our_own(envelope_from: str, header_from: str | None, *, domain: str) -> bool:
    """Whether the envelope or From is under our own domain. Nothing from outside writes as our
    domain: a forward of ours sent back (to this order or another), whatever was changed in it,
    is a replay, and our signature is no credential. Decided before authentication, so that the
    answer never depends on how our domain's DMARC judged the altered copy."""
    _, from_address = _parse_from(header_from)
    envelope = envelope_from.strip().strip("<>").lower()
    return is_alias_domain(from_address, domain) or is_alias_domain(envelope, domain)


def _route(
    recipient: AliasView, sender: AliasView, header_name: str | None, parties: OrderParties
) -> Route:
    # The name the order knows a participant by beats whatever its mail client says; anyone
    # else is shown as external, so that nobody can pass as a participant by its name.
    name = safe_name(sender.display_name or header_name)
    if sender.role is ParticipantRole.EXTERNAL:
        name = external_name(name, sender.real_address, parties)
    direction = Direction(f"TO_{recipient.role.value}")  # the two enums mirror each other
    return Route(
        recipient, recipient.real_address, sender.address, name, sender.role, direction,
        sender.real_address,
    )  # fmt: skip


def external_name(name: str | None, address: str, parties: OrderParties) -> str:
    """How a sender that is not the customer or the store is shown: `Name (external, domain)`.

    A name that looks like a participant's (one contains the other, case and punctuation
    aside) is not shown at all: the participants' names are reserved for their own mail.
    """
    domain = address.rpartition("@")[2].strip().lower() or "unknown"
    shown = safe_name(name)
    if shown and _looks_like_a_participant(shown, parties):
        shown = None
    return f"{shown} (external, {domain})" if shown else f"External sender ({domain})"


def _looks_like_a_participant(name: str, parties: OrderParties) -> bool:
    mine = _comparable(name)
    for party in (parties.customer, parties.store):
        theirs = _comparable(party.display_name or "")
        if mine and theirs and (theirs in mine or mine in theirs):
            return True
    return False


def _comparable(name: str) -> str:
    # NFKC folds full-width and compatibility forms: a full-width "Shop" reads as "Shop".
    return "".join(c for c in unicodedata.normalize("NFKC", name).casefold() if c.isalnum())


def _parse_from(header_from: str | None) -> tuple[str | None, str]:
    if not header_from:
        return None, ""
    name, address = parseaddr(header_from)
    address = address.strip().lower()
    return safe_name(decode_words(name)), address if "@" in address else ""


def safe_name(name: str | None) -> str | None:
    """A display name fit for a header; None when it is empty or would show an address."""
    name = " ".join(without_controls(name or "").split()).strip("\"'").strip()
    return None if not name or "@" in name else name


_DKIM_DOMAIN = re.compile(r"(?:^|;)\s*d\s*=\s*([^;\s]{1,253})")


def signed_by(dkim_signatures: list[str], domain: str) -> bool:
    """Whether any of these DKIM-Signature values has `d=` our domain or one below it."""
    domain = domain.lower()
    for value in dkim_signatures:
        found = _DKIM_DOMAIN.search(value[:4096])
        signer = found.group(1).lower().rstrip(".") if found else ""
        if signer == domain or signer.endswith("." + domain):
            return True
    return False
