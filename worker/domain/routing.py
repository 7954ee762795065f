"""Who may write to an alias: the route a message takes, or why it is refused.

Pure: the relay looks the recipient alias up, calls `decide_route`, and turns a `Refusal` or a
`MessageRejected` into the SMTP reply it carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr

from worker.contracts.events import Direction, ParticipantRole
from worker.domain.aliases import is_alias_domain
from worker.domain.headers import decode_words
from worker.domain.replies import ALIAS_EXPIRED, BOUNCE_NOT_RELAYED, LOOP_DETECTED, ONLY_CUSTOMER
from worker.domain.sender_auth import UNVERIFIED_SENDER_NAME


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


def decide_route(
    recipient: AliasView,
    parties: OrderParties,
    envelope_from: str,
    header_from: str | None,
    reverse_alias_for_sender: AliasView | None,
    *,
    domain: str,
    sender_verified: bool = True,
) -> Route | NeedsReverseAlias | Refusal:
    """Who the mail goes to and whom it appears to come from; `domain` is the alias domain.

    `sender_verified` False (a claim to be a participant that authentication did not confirm,
    see `sender_auth.judge_sender`): the sender is never matched to a participant, so it goes
    out under a reverse alias of its own and the name `UNVERIFIED_SENDER_NAME`.
    """
    if recipient.order_id != parties.customer.order_id:
        raise ValueError("the recipient alias belongs to another order")
    envelope = envelope_from.strip().strip("<>").lower()
    name, from_address = _parse_from(header_from)
    if recipient.expired or not envelope:
        # A null reverse path marks a bounce, and bounces quote the failed message together with
        # its recipient's real address: relaying one would unmask that participant.
        return Refusal.of(ALIAS_EXPIRED if recipient.expired else BOUNCE_NOT_RELAYED)
    if recipient.role is ParticipantRole.EXTERNAL:
        # Both are forgeable; requiring both at least stops a stranger who sets only one of them.
        if envelope == from_address == parties.customer.real_address:
            return _route(recipient, parties.customer, name)
        return Refusal.of(ONLY_CUSTOMER)
    # From identifies the sender before the envelope does: mail sent through a provider carries
    # the provider's bounce address as envelope sender, often a different one per message.
    sender = parties.by_address(from_address) or parties.by_address(envelope)
    address = from_address or envelope
    if not sender_verified:
        sender, name = None, UNVERIFIED_SENDER_NAME
    # An unknown sender under our own domain means one of our forwards came back to us.
    if sender is None and (is_alias_domain(address, domain) or is_alias_domain(envelope, domain)):
        return Refusal.of(LOOP_DETECTED)
    if sender is None:
        sender = reverse_alias_for_sender
        if sender is None:
            return NeedsReverseAlias(address, name)
        if (sender.real_address, sender.order_id) != (address, recipient.order_id):
            raise ValueError("the reverse alias is not this sender's in this order")
    return _route(recipient, sender, name)


def _route(recipient: AliasView, sender: AliasView, header_name: str | None) -> Route:
    # The name the order knows a participant by beats whatever its mail client says.
    name = safe_name(sender.display_name or header_name)
    direction = Direction(f"TO_{recipient.role.value}")  # the two enums mirror each other
    return Route(
        recipient, recipient.real_address, sender.address, name, sender.role, direction,
        sender.real_address,
    )  # fmt: skip


def _parse_from(header_from: str | None) -> tuple[str | None, str]:
    if not header_from:
        return None, ""
    name, address = parseaddr(header_from)
    address = address.strip().lower()
    return safe_name(decode_words(name)), address if "@" in address else ""


def safe_name(name: str | None) -> str | None:
    """A display name fit for a header; None when it is empty or would show an address."""
    name = " ".join((name or "").split()).strip("\"'")
    return None if not name or "@" in name else name
