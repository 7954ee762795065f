"""The relay's `Authentication-Results` header (RFC 8601), and the forged ones it removes.

The header is built with `authres`, the RFC 8601 library of the pyspf/dkimpy family (it quotes
and orders what it writes). Properties name domains only (RFC 8601's `pvalue` grammar makes the
local-part optional), so the header never shows a participant's real address.

Finding the authserv-id of a received header is done here rather than with `authres`' parser:
that parser rejects valid headers (a quoted-string authserv-id) and raises on hostile ones, and
all the forgery rule needs is the first value after any comments.
"""

from __future__ import annotations

import re
from typing import Final

import authres
import authres.dmarc

from worker.domain.sender_auth import Authentication

HEADER_NAME: Final = "Authentication-Results"
_COMMENT: Final = re.compile(r"\((?:[^()\\]|\\.)*\)")
_TOKEN: Final = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;()"]+))')


def authentication_results(authserv_id: str, auth: Authentication) -> str:
    """The field's value (after `Authentication-Results: `) for one message's verdicts."""
    results: list[object] = [
        authres.SPFAuthenticationResult(
            result=str(auth.spf.result),
            **(
                {"smtp_mailfrom": auth.spf.domain}
                if auth.spf.identity == "mailfrom"
                else {"smtp_helo": auth.spf.domain}
            ),
        )
    ]
    results += [
        authres.DKIMAuthenticationResult(
            result=str(d.result), header_d=d.domain, header_s=d.selector or None
        )
        for d in auth.dkim
    ] or [authres.DKIMAuthenticationResult(result="none")]
    results.append(
        authres.dmarc.DMARCAuthenticationResult(
            result=str(auth.dmarc.result),
            header_from=auth.from_domain,
            result_comment=f"p={auth.dmarc.policy}" if auth.dmarc.policy else None,
        )
    )
    header = str(authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results))
    return header.removeprefix(f"{HEADER_NAME}: ")


def authserv_id(value: str) -> str | None:
    """The authserv-id a received `Authentication-Results` value claims, lowercased."""
    # Nested comments are rare; removing innermost ones until none is left handles them all.
    previous = None
    while previous != value:
        previous, value = value, _COMMENT.sub(" ", value)
    match = _TOKEN.match(value)
    if match is None:
        return None
    quoted, token = match.groups()
    found = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else token
    return found.strip().lower().rstrip(".") or None


def is_forged(value: str, our_authserv_id: str) -> bool:
    """True for a received header that claims to be ours: only this relay writes those."""
    return authserv_id(value) == our_authserv_id.lower().rstrip(".")
