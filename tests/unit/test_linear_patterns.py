"""Every pattern applied to message content or log lines, fed 1 MB tokens (issue 19).

A quadratic pattern takes minutes on these inputs; a linear one milliseconds. The bound below is
generous for a loaded two-core machine and still three orders of magnitude under quadratic.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.unit.test_relaying import CUSTOMER, DOMAIN, PARTIES, STORE
from worker.core.logging import AddressRedactor
from worker.domain.bounces import private_terms, read_report, scrub
from worker.domain.headers import ParsedMessage, decode_words
from worker.domain.rewrite import rewrite_for_forward
from worker.domain.routing import Route, decide_route, signed_by
from worker.domain.summary import summarize

MB = 1024 * 1024
BUDGET_S = 2.0
TOKENS = {
    "address characters, no @": "a" * MB,
    "dotted labels": "a." * (MB // 2),
    "@ then a long domain": "a@" + "b" * MB,
    "many @": "a@" * (MB // 2),
    "local part then @": "x" * MB + "@example.org",
    "digits and dots": "1." * (MB // 2),
    "encoded-word starts": "=?" * (MB // 2),
    "tags": "<" * MB,
    "spaces": " " * MB,
}


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _route() -> Route:
    route = decide_route(
        CUSTOMER, PARTIES, STORE.real_address, f"<{STORE.real_address}>", None, domain=DOMAIN
    )
    assert isinstance(route, Route)
    return route


@pytest.mark.parametrize("token", list(TOKENS.values()), ids=list(TOKENS))
def test_the_bounce_scrubber_is_linear(token: str) -> None:
    private = private_terms(CUSTOMER.real_address)
    assert _timed(lambda: scrub(token, private)) < BUDGET_S


@pytest.mark.parametrize("token", list(TOKENS.values()), ids=list(TOKENS))
def test_the_log_redactor_is_linear(token: str) -> None:
    redact = AddressRedactor(DOMAIN)
    assert _timed(lambda: redact(None, "info", {"event": "x", "value": token})) < BUDGET_S


@pytest.mark.parametrize("token", list(TOKENS.values()), ids=list(TOKENS))
def test_the_header_reader_rewrite_and_summary_are_linear(token: str) -> None:
    # The token folded into legal lines, as a sender would send it.
    folded = "\r\n ".join(token[i : i + 900] for i in range(0, len(token), 900))
    raw = (
        f"From: {STORE.real_address}\r\nSubject: {folded}\r\nX-Long: {folded}\r\n"
        f"DKIM-Signature: v=1; d={folded}\r\n\r\n{token}\r\n"
    ).encode()

    def whole_path() -> None:
        message = ParsedMessage.parse(raw)
        signed_by(message.headers("DKIM-Signature"), DOMAIN)
        decode_words(message.header("Subject") or "")
        summarize(rewrite_for_forward(message, _route(), PARTIES, domain=DOMAIN))

    assert _timed(whole_path) < 3 * BUDGET_S


def test_a_megabyte_diagnostic_code_in_a_dsn_is_read_in_linear_time() -> None:
    folded = "\r\n ".join("x" * 900 for _ in range(MB // 900))
    dsn = (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: bounces@ct.example.com\r\n"
        "Subject: Undelivered\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {CUSTOMER.real_address}\r\nAction: failed\r\n"
        f"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 {folded}\r\n--b--\r\n"
    ).encode()
    private = private_terms(CUSTOMER.real_address)
    report: list[object] = []
    assert _timed(lambda: report.append(read_report(dsn, private=private))) < 2 * BUDGET_S
    assert report[0] is not None


def test_the_scrubber_still_masks_what_it_must() -> None:
    text = (
        "550 <jane.roe@example.org> unknown; jane.roe jane.roe at mx2.example.org "
        "from 203.0.113.9 user JANE.ROE"
    )
    scrubbed = scrub(text, ["jane.roe@example.org", "jane.roe", "example.org"])
    assert "jane" not in scrubbed.lower() and "example.org" not in scrubbed
    assert "203.0.113.9" not in scrubbed and "<address>" in scrubbed


def test_a_long_log_value_is_cut_before_the_word_it_would_split() -> None:
    from worker.core.logging import MAX_LOGGED_CHARS

    redact = AddressRedactor(DOMAIN)
    value = "x " * (MAX_LOGGED_CHARS // 2 - 3) + f"{CUSTOMER.real_address} and more"
    logged = redact(None, "info", {"value": value})["value"]
    assert logged.endswith(" (truncated)") and len(logged) <= MAX_LOGGED_CHARS + 20
    assert "maria" not in logged
