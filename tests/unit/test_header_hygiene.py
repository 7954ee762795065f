"""Header hygiene as properties (Hypothesis): whatever a sender writes, each forward parses back
into exactly the headers the relay meant to write, with no control character, no field it strips,
and no exception that would make the relay answer 451 (issue 19)."""

from __future__ import annotations

from email import policy
from email.header import Header
from email.parser import BytesParser
from email.utils import formataddr

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.unit.test_relaying import CUSTOMER, DOMAIN, PARTIES, STORE
from worker.domain.headers import ParsedMessage, decode_words, decoded_or_none, without_controls
from worker.domain.replies import MessageRejected
from worker.domain.rewrite import rewrite_for_forward
from worker.domain.routing import (
    NeedsReverseAlias,
    Refusal,
    Route,
    decide_route,
    external_name,
    safe_name,
)
from worker.domain.summary import summarize

CHARSETS = ("utf-8", "iso-8859-1", "koi8-r", "shift_jis", "iso-2022-jp", "gb2312")
STRIPPED = ("Bcc", "Sender", "Received", "Return-Path", "X-Originating-IP", "Delivered-To")
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Any text, control characters and line separators included.
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=80)


def _route() -> Route:
    route = decide_route(
        CUSTOMER, PARTIES, STORE.real_address, f"<{STORE.real_address}>", None, domain=DOMAIN
    )
    assert isinstance(route, Route)
    return route


def _forward(head: bytes) -> tuple[bytes, object]:
    raw = head + b"\r\n\r\nbody\r\n"
    out = rewrite_for_forward(raw, _route(), PARTIES, domain=DOMAIN)
    return out, BytesParser(policy=policy.default).parsebytes(out)


def _meant(text: str) -> str:
    """What the relay means to write for a decoded value: no controls, whitespace collapsed."""
    return " ".join(without_controls(text).split())


def _encoded(text: str, charset: str) -> bytes | None:
    try:
        text.encode(charset)
    except UnicodeError:
        return None
    return Header(text, charset).encode(linesep="\r\n").encode("ascii")


def _header_lines_are_clean(out: bytes) -> None:
    head = out.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line
        assert not any(b < 0x20 and b != 0x09 for b in line), line
        assert line[:1] in (b" ", b"\t") or b":" in line, line


@PROPERTY
@given(text=TEXT, charset=st.sampled_from(CHARSETS))
@example(text="Hi\r\nBcc: victim@elsewhere.test", charset="utf-8")
@example(text="x\nSender: sac@lojabonita.test\n\nbody", charset="iso-8859-1")
@example(text="\x00\x1b[31m\u2028\u0085", charset="utf-8")
def test_a_subject_in_encoded_words_parses_back_to_exactly_what_was_meant(
    text: str, charset: str
) -> None:
    encoded = _encoded(text, charset)
    if encoded is None:
        return  # not representable in this charset
    out, message = _forward(b"To: " + CUSTOMER.address.encode() + b"\r\nSubject: " + encoded)
    _header_lines_are_clean(out)
    subjects = message.get_all("Subject") or []  # type: ignore[attr-defined]
    if decoded_or_none(encoded.decode("ascii")) is None:
        assert subjects == []  # unreadable in its own charset: dropped, not passed on
        return
    assert len(subjects) == 1
    want = _meant(text)
    for party in (CUSTOMER, STORE):  # real addresses masked, as everywhere
        want = want.replace(party.real_address, party.address)
    assert " ".join(str(subjects[0]).split()) == want
    assert not any(message.get_all(name) for name in STRIPPED)  # type: ignore[attr-defined]
    defects = [d for h in message.values() for d in getattr(h, "defects", ())]  # type: ignore[attr-defined]
    assert not [d for d in defects if "newline" in str(d).lower()]


@PROPERTY
@given(names=st.lists(TEXT, min_size=1, max_size=3), charset=st.sampled_from(CHARSETS))
def test_display_names_in_an_address_list_parse_back_to_the_names_meant(
    names: list[str], charset: str
) -> None:
    addresses = [CUSTOMER.real_address, STORE.real_address, "other@elsewhere.test"]
    pairs = list(zip(names, addresses, strict=False))
    try:
        value = ", ".join(formataddr((n, a), charset=charset) for n, a in pairs)
    except UnicodeError:
        return
    out, message = _forward(b"From: " + STORE.real_address.encode() + b"\r\nTo: " + value.encode())
    _header_lines_are_clean(out)
    to = message["To"]  # type: ignore[index]
    if to is None or "\n" in value or "\r" in value:
        # Dropped as unreadable (allowed, never passed on raw), or a raw line break in the
        # value made it another header block: the clean-lines check above is the property.
        return
    got = [(a.display_name, a.addr_spec) for a in to.addresses]
    masked = {CUSTOMER.real_address: CUSTOMER.address, STORE.real_address: STORE.address}
    # What the relay means: the decoded name without controls (`safe_name`: none at all when
    # it would show an address), the address masked.
    want = [(safe_name(decoded_or_none(n)) or "", masked.get(a, a)) for n, a in pairs]
    assert [(" ".join(n.split()), a) for n, a in got] == want
    assert CUSTOMER.real_address not in out.decode("ascii", "replace")


@PROPERTY
@given(
    name=st.sampled_from(STRIPPED),
    case=st.sampled_from([str.lower, str.upper, str.title]),
    space=st.sampled_from(["", " ", "\t", "  "]),
    value=TEXT,
)
def test_a_stripped_field_stays_stripped_however_it_is_written(
    name: str, case: object, space: str, value: str
) -> None:
    written = case(name)  # type: ignore[operator]
    encoded = _encoded(value, "utf-8") or b"x"
    out, message = _forward(
        f"Subject: s\r\n{written}{space}: ".encode() + encoded + b"\r\nTo: " + b"a@b.test"
    )
    assert message.get_all(name) is None  # type: ignore[attr-defined]
    assert f"\n{name.lower()}".encode() not in out.lower().replace(b"\r", b"")


@PROPERTY
@given(head=st.binary(max_size=400))
@example(head=b"Subject: =?utf-8?b?=?=\r\nTo: =?x-unknown?q?a?= <")
@example(head=b'To: "\\\r\n <@>,,,<<>>\r\nCc: =?utf-8?q?=FF=FE?=@\r\n\tx')
def test_no_header_block_makes_the_rewrite_raise_anything_but_a_permanent_refusal(
    head: bytes,
) -> None:
    raw = head + b"\r\n\r\nbody\r\n"
    try:
        out = rewrite_for_forward(raw, _route(), PARTIES, domain=DOMAIN)
    except MessageRejected as exc:
        assert exc.code >= 500
        return
    _header_lines_are_clean(out)
    summarize(out)  # never raises either
    assert ParsedMessage.parse(out).header("From") is not None


@PROPERTY
@given(header_from=TEXT, envelope=st.sampled_from(["x@y.test", STORE.real_address]))
def test_routing_reads_any_from_without_raising(header_from: str, envelope: str) -> None:
    decision = decide_route(CUSTOMER, PARTIES, envelope, header_from, None, domain=DOMAIN)
    assert isinstance(decision, Route | NeedsReverseAlias | Refusal)
    if isinstance(decision, Route) and decision.sender_name:
        assert without_controls(decision.sender_name) == decision.sender_name


@PROPERTY
@given(name=TEXT)
@example(name="Loja Bonita")
@example(name="LOJA  bonita!")
@example(name="Ｌｏｊａ Ｂｏｎｉｔａ")  # noqa: RUF001 - the full-width look-alike is the point
def test_an_external_name_never_reads_as_a_participant(name: str) -> None:
    shown = external_name(name, "x@elsewhere.test", PARTIES)
    assert shown.endswith("(external, elsewhere.test)") or shown == (
        "External sender (elsewhere.test)"
    )
    assert shown not in (CUSTOMER.display_name, STORE.display_name)
    assert "Loja Bonita" not in shown and "Maria Silva" not in shown
    assert without_controls(shown) == shown


@pytest.mark.parametrize("charset", CHARSETS)
def test_decode_words_never_returns_a_control_character(charset: str) -> None:
    hidden = _encoded("a\r\nb\x00c\x1bd\u2028e", charset) or _encoded("a\r\nb\x00c\x1bd", charset)
    assert hidden is not None
    decoded = decode_words(hidden.decode("ascii"))
    assert without_controls(decoded) == decoded and "a" in decoded
