"""The relay's SMTP replies and limits, in one vocabulary.

5xx only where a retry cannot help; anything transient or unexpected is a 4xx, so the sending
server keeps the message and retries. Every reply the relay gives is named here, so that a test,
a log line or a timeline entry can point at the same constant.
"""

from __future__ import annotations

from typing import Final

# Accepted.
RECIPIENT_OK: Final = "250 2.1.5 Recipient OK"
FORWARDED: Final = "250 2.0.0 Message forwarded"
REPORT_RECEIVED: Final = "250 2.0.0 Report received"

# Refused for good: the recipient.
UNKNOWN_ALIAS: Final = "550 5.1.1 No such address"
ALIAS_EXPIRED: Final = "550 5.1.1 This conversation is closed: this address has expired"
RELAY_DENIED: Final = "550 5.7.1 Relaying denied"
NEEDS_OWN_TRANSACTION: Final = (
    "452 4.5.3 This recipient needs a message of its own: send it in a separate transaction"
)

# Refused for good: the sender.
ONLY_CUSTOMER: Final = "550 5.7.1 Only the customer of this order may write to this address"
SENDER_NOT_VERIFIED: Final = (
    "550 5.7.1 The sender could not be verified as the customer of this order (SPF/DKIM/DMARC)"
)
PARTICIPANT_NOT_VERIFIED: Final = (
    "550 5.7.1 The sender could not be verified as a participant of this order and its domain's"
    " DMARC policy asks to refuse such mail"
)
DMARC_REJECTED: Final = (
    "550 5.7.1 Message refused: it fails the sender domain's DMARC policy (reject)"
)
MARKETING_REFUSED: Final = (
    "550 5.7.1 This address belongs to an order conversation and cannot receive marketing"
    " or mailing-list mail"
)

# Refused for good: the message.
BOUNCE_NOT_RELAYED: Final = "550 5.7.1 Bounces are not relayed into order conversations"
LOOP_DETECTED: Final = "550 5.4.6 Routing loop detected"
TOO_BIG: Final = "552 5.3.4 Message too big"
TOO_MANY_HEADERS: Final = "554 5.6.0 Too many header fields"

# Try again later.
RATE_LIMITED: Final = "451 4.7.1 Too many messages for this address right now, try again later"
DNS_TEMPORARY: Final = "451 4.4.3 Sender authentication lookups failed, please try again later"
TEMPORARY_FAILURE: Final = "451 4.3.0 Temporary failure, please try again later"
UPSTREAM_UNAVAILABLE: Final = "451 4.4.1 Upstream unavailable, please try again later"

# Limits on what one message may make the relay read.
MAX_HEADER_FIELDS: Final = 1000


class MessageRejected(Exception):
    """The message itself cannot be relayed; `text` is the full SMTP reply."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.code = int(reply[:3])
        self.text = reply
