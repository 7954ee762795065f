"""Bodies masked like headers, and one entry per message, not per Message-ID (issue 19)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from tests.unit.test_relaying import CUSTOMER, DOMAIN, PARTIES, STORE, make_mail
from worker.domain.relay_events import forwarded
from worker.domain.rewrite import Masker, rewrite_for_forward
from worker.domain.routing import Route, decide_route
from worker.domain.summary import summarize

REAL = CUSTOMER.real_address


def _route() -> Route:
    route = decide_route(
        CUSTOMER, PARTIES, STORE.real_address, f"<{STORE.real_address}>", None, domain=DOMAIN
    )
    assert isinstance(route, Route)
    return route


def test_real_addresses_in_text_html_quotes_and_attached_messages_are_masked() -> None:
    attached = EmailMessage()
    attached["From"] = f"Maria <{REAL}>"
    attached["Subject"] = "earlier"
    attached.set_content(f"write me at {REAL}")
    message = EmailMessage()
    message["From"] = STORE.real_address
    message["To"] = CUSTOMER.address
    message["Subject"] = "Re: pedido"
    message.set_content(f"Escreva para {REAL}\n\n> On Monday {REAL} wrote:\n> oi")
    message.add_alternative(f"<p>Escreva para <a href='mailto:{REAL}'>{REAL.upper()}</a></p>",
                            subtype="html")  # fmt: skip
    message.add_attachment(attached)
    raw = message.as_bytes(policy=policy.SMTP)
    out = rewrite_for_forward(raw, _route(), PARTIES, domain=DOMAIN)
    assert REAL.encode() not in out.lower()
    assert out.count(CUSTOMER.address.encode()) >= 5
    parsed = BytesParser(policy=policy.default).parsebytes(out)
    assert parsed.get_body(("plain",)) is not None  # the MIME structure survives


def test_a_base64_text_part_is_decoded_masked_and_encoded_again() -> None:
    message = EmailMessage()
    message["From"] = STORE.real_address
    message["To"] = CUSTOMER.address
    message["Subject"] = "b64"
    message.set_content(f"contato: {REAL}, obrigado", cte="base64")
    message.add_attachment(b"%PDF-1.4 " + REAL.encode(), maintype="application", subtype="pdf")
    out = rewrite_for_forward(message.as_bytes(), _route(), PARTIES, domain=DOMAIN)
    parsed = BytesParser(policy=policy.default).parsebytes(out)
    body = parsed.get_body(("plain",))
    assert body is not None and CUSTOMER.address in body.get_content()
    assert REAL not in body.get_content()
    # An attachment that is not text is passed on as it came.
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_content() == b"%PDF-1.4 " + REAL.encode()
    single = EmailMessage()
    single["Subject"] = "one part"
    single.set_content(f"sou {REAL}", cte="base64")
    parsed = BytesParser(policy=policy.default).parsebytes(
        rewrite_for_forward(single.as_bytes(), _route(), PARTIES, domain=DOMAIN)
    )
    assert REAL not in parsed.get_content() and CUSTOMER.address in parsed.get_content()


def test_first_words_never_hold_a_real_address_even_from_a_base64_body() -> None:
    raw = make_mail(text=f"Olá, sou {REAL}, aguardo", attachment=None)
    out = rewrite_for_forward(raw, _route(), PARTIES, domain=DOMAIN)
    summary = summarize(out, mask=Masker.of(PARTIES, _route()).text)
    assert REAL not in summary.first_words and CUSTOMER.address in summary.first_words
    message = EmailMessage()
    message["Subject"] = "b64"
    message.set_content(f"contato: {REAL}", cte="base64")
    b64 = summarize(message.as_bytes(), mask=Masker.of(PARTIES, _route()).text)
    assert REAL not in b64.first_words and CUSTOMER.address in b64.first_words


def test_two_messages_under_one_message_id_are_two_entries_and_a_redelivery_is_one() -> None:
    first = rewrite_for_forward(
        make_mail(text="primeira", attachment=None), _route(), PARTIES, domain=DOMAIN
    )
    second = rewrite_for_forward(
        make_mail(text="segunda", attachment=None), _route(), PARTIES, domain=DOMAIN
    )
    again = rewrite_for_forward(
        make_mail(text="primeira", attachment=None), _route(), PARTIES, domain=DOMAIN
    )

    def event_id(out: bytes) -> str:
        return forwarded(_route(), summarize(out), out, at=_now()).event_id

    assert summarize(first).message_id == summarize(second).message_id  # the same Message-ID
    assert event_id(first) != event_id(second)
    assert event_id(first) == event_id(again)


def _now() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


def test_rejections_listed_per_order_and_hour_are_bounded_and_repeats_pass() -> None:
    from datetime import timedelta

    from worker.domain.relay_events import RejectionBudget, rejected

    budget = RejectionBudget(per_order=3)
    at = _now()

    def refusal(sender: str, when: datetime = at) -> bool:
        event = rejected(CUSTOMER, None, sender_key=sender, reason="sender-not-authenticated",
                         at=when)  # fmt: skip
        return budget.admit(event, now=when)

    assert [refusal(f"guess-{i}") for i in range(6)] == [True, True, True, False, False, False]
    assert refusal("guess-0")  # the same entry again adds nothing: let through
    assert refusal("guess-9", at + timedelta(hours=1))  # a new window


def test_a_participant_writing_to_its_own_alias_is_refused_so_masking_is_no_oracle() -> None:
    from worker.domain.replies import LOOP_DETECTED
    from worker.domain.routing import Refusal

    decision = decide_route(
        STORE, PARTIES, STORE.real_address, f"<{STORE.real_address}>", None, domain=DOMAIN
    )
    assert decision == Refusal.of(LOOP_DETECTED)
