"""Whole-message outcomes: which recipients one SMTP transaction may carry.

SMTP has one reply to DATA for all the recipients of a transaction, so that reply must be true
for each of them. The relay forwards each alias along its own route (its own recipient, sender
alias and rewritten bytes) and decides at RCPT (Postfix's rule for relays): a recipient that is
refused gets its own 4xx/5xx there, and an accepted transaction carries one route only. A later
recipient that needs another route answers `452 4.5.3`, which RFC 5321 (4.5.3.1.10) tells the
sender to deliver in a separate transaction; senders (Postfix, Exim, every provider) do so at once.
The reply to DATA is then the outcome of that one route: never "250" for mail that was refused,
nor a 4xx that makes the sender resend what was delivered.
"""

from __future__ import annotations

from collections.abc import Sequence


def fits_transaction(accepted: Sequence[str], candidate: str) -> bool:
    """Whether alias `candidate` can join the recipients already accepted (aliases, lowercase).

    The same alias again is the same route (RFC 5321 lets a sender repeat a recipient); any
    other alias routes elsewhere: to another participant, or within another order.
    """
    return not accepted or candidate.strip().lower() in accepted
