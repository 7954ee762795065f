"""The last steps of everything the notifier and the relay send, and the first of its bounces.

`seal` DKIM-signs the final bytes (nothing may change them afterwards) and gives the message its
VERP return path (`bounces+<token>@CT_DOMAIN`, which names it); the caller keeps the message in
the message store, with what a bounce of it needs, before it sends it. `suppression`
says whether an order's customer bounced hard before, so that the notifier records the failure
instead of sending again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from worker.adapters.dkim_keys import load_signer
from worker.adapters.suppressions import Suppression, Suppressions
from worker.core.config import Settings
from worker.core.crypto import AddressCipher, bounce_token_keys
from worker.domain.bounces import SentMessage
from worker.domain.dkim import DkimSigner
from worker.domain.verp import BounceAddresses


@dataclass(frozen=True)
class MailKeys:
    """The keys of outbound mail, loaded once before a worker starts (ConfigError if unfit)."""

    signer: DkimSigner
    bounce_addresses: BounceAddresses

    @classmethod
    def load(cls, settings: Settings) -> MailKeys:
        return cls(
            signer=load_signer(settings),
            bounce_addresses=BounceAddresses(
                bounce_token_keys(settings.data_keys()), settings.domain
            ),
        )


@dataclass(frozen=True)
class Sealed:
    raw: bytes  # the signed message, exactly as it goes on the wire
    return_path: str  # the envelope sender: this message's VERP address


class Outbound:
    def __init__(
        self,
        keys: MailKeys,
        *,
        suppressions: Suppressions,
        cipher: AddressCipher,
    ) -> None:
        self._keys = keys
        self.bounce_addresses = keys.bounce_addresses
        self._suppressions = suppressions
        self._cipher = cipher

    def seal(self, raw: bytes, sent: SentMessage) -> Sealed:
        """The message signed, last, and the return path that names it."""
        return Sealed(
            raw=self._keys.signer.sign(raw, timestamp=int(time.time())),
            return_path=self._keys.bounce_addresses.address(sent.event_id, sent.expires_at),
        )

    async def suppression(
        self, order_id: str, store_id: str, customer_address: str
    ) -> Suppression | None:
        """The earliest suppression in force for this order's customer, if any."""
        found = await self._suppressions.active(
            order_id, store_id, self._cipher.address_hash(customer_address)
        )
        return min(found, key=lambda s: s.since) if found else None

    async def suppress(
        self,
        *,
        order_id: str,
        store_id: str,
        customer_address: str,
        status: str,
        cause_event_id: str,
        at: datetime,
    ) -> None:
        """Stop emailing this order's customer (and, with CT_BOUNCE_SUPPRESS_STORE, the same
        address for the store's other orders): it bounced hard."""
        await self._suppressions.suppress(
            order_id=order_id,
            store_id=store_id,
            address_hash=self._cipher.address_hash(customer_address),
            status=status,
            cause_event_id=cause_event_id,
            at=at,
        )
