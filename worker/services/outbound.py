"""The last step of everything the notifier and the relay send: DKIM signature and VERP.

`seal` DKIM-signs the final bytes (nothing may change them afterwards) and gives the message its
VERP return path (`bounces+<token>@CT_DOMAIN`, which names it, so that its bounce can be
verified); the caller keeps the message in the message store, with what a bounce of it needs,
before it sends it. Whether to send at all is services/suppression.py's question.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from worker.adapters.dkim_keys import load_signer
from worker.core.config import Settings
from worker.core.crypto import bounce_token_keys
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
    def __init__(self, keys: MailKeys) -> None:
        self._keys = keys
        self.bounce_addresses = keys.bounce_addresses

    def seal(self, raw: bytes, sent: SentMessage) -> Sealed:
        """The message signed, last, and the return path that names it."""
        return Sealed(
            raw=self._keys.signer.sign(raw, timestamp=int(time.time())),
            return_path=self._keys.bounce_addresses.address(sent.event_id, sent.expires_at),
        )
