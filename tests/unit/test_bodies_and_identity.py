"""Bodies masked like headers, and one entry per message, not per Message-ID (issue 19)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from tests.unit.test_relaying import CUSTOMER, DOMAIN, PARTIES, STORE, make_mail
from worker.contracts.events import TimelineEvent
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


def test_rejections_past_the_budget_are_counted_on_the_last_listed_entry() -> None:
    from datetime import timedelta

    from worker.domain.relay_events import Admission, RejectionBudget, rejected

    budget = RejectionBudget(per_order=3)
    at = _now()

    def refusal(sender: str, when: datetime = at) -> tuple[TimelineEvent, Admission]:
        event = rejected(CUSTOMER, None, sender_key=sender, reason="sender-not-authenticated",
                         at=when)  # fmt: skip
        return event, budget.admit(event, now=when)

    listed = [refusal(f"guess-{i}") for i in range(3)]
    assert all(a.event == e and not a.folded for e, a in listed)
    last = listed[-1][0]
    folded = [refusal(f"guess-{i}")[1] for i in range(3, 6)]
    assert all(a.folded and a.event.event_id == last.event_id for a in folded)
    assert [a.event.folded_refusals for a in folded] == [1, 2, 3]
    assert folded[0].event.model_copy(update={"folded_refusals": None}) == last
    again = refusal("guess-0")[1]  # the same listed entry again adds nothing: let through
    assert not again.folded and again.event == listed[0][0]
    assert refusal("guess-5")[1].event.folded_refusals == 3  # a folded one again counts once
    fresh, admitted = refusal("guess-9", at + timedelta(hours=1))  # a new window
    assert admitted == Admission(fresh, folded=False)


def test_counts_are_folded_into_the_sealed_copy_of_the_last_entry() -> None:
    from worker.domain.relay_events import RejectionBudget, rejected

    budget = RejectionBudget(per_order=1)
    at = _now()
    listed = rejected(CUSTOMER, None, sender_key="a", reason="r", at=at)
    budget.admit(listed, now=at)
    sealed = listed.model_copy(update={"subject_id": "subject-1"})  # as the relay sealed it
    budget.sealed(sealed, now=at)
    folded = budget.admit(rejected(CUSTOMER, None, sender_key="b", reason="r", at=at), now=at)
    assert folded.event == sealed.model_copy(update={"folded_refusals": 1})


def test_folded_refusals_of_one_order_leave_other_orders_budgets_alone() -> None:
    from worker.domain.relay_events import RejectionBudget, rejected

    budget = RejectionBudget(per_order=1)
    other = replace(CUSTOMER, order_id="o-2", address="c2f0@relay.example")
    at = _now()
    first = rejected(CUSTOMER, None, sender_key="a", reason="r", at=at)
    assert not budget.admit(first, now=at).folded
    assert budget.admit(rejected(CUSTOMER, None, sender_key="b", reason="r", at=at), now=at).folded
    elsewhere = rejected(other, None, sender_key="b", reason="r", at=at)
    assert not budget.admit(elsewhere, now=at).folded


def test_a_participant_writing_to_its_own_alias_is_refused_so_masking_is_no_oracle() -> None:
    from worker.domain.replies import LOOP_DETECTED
    from worker.domain.routing import Refusal

    decision = decide_route(
        STORE, PARTIES, STORE.real_address, f"<{STORE.real_address}>", None, domain=DOMAIN
    )
    assert decision == Refusal.of(LOOP_DETECTED)
