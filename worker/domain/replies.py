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

# Refused for good: the sender. One reply for "not authenticated as someone who may write
# here", whatever the reason (no participant claim verified, a DMARC reject or quarantine
# failure, anyone but the customer at a reverse alias): a reply that differed by reason would
# tell a sender whether the address it claimed is a participant's real one.
NOT_AUTHENTICATED: Final = (
    "550 5.7.1 Message refused: the sender is not authenticated (SPF/DKIM/DMARC) as one who"
    " may write to this address"
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
HEADER_UNPARSABLE: Final = "550 5.6.0 A header field of this message cannot be read"

# Try again later.
TOO_MANY_SESSIONS: Final = "421 4.7.0 Too many connections, please try again later"
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
