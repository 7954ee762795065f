"""The console's pure rules: progress, alias kinds, the thread, accounts, throttling, windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.events import timeline_event
from worker.adapters.paging import BadCursor, decode_cursor, encode_cursor
from worker.contracts.events import OrderStatus, TimelineKind
from worker.domain.accounts import (
    AccountError,
    Role,
    backoff,
    check_new_password,
    hash_password,
    new_api_token,
    normalize_user_name,
    parse_api_token,
    parse_duration,
    verify_password,
)
from worker.domain.aliases import AliasWindow, MaskType, next_window
from worker.domain.conversation import (
    MessageState,
    StatusItem,
    StepState,
    conversation,
    mask_of,
    progress,
)

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def _changes(*statuses: OrderStatus) -> list[StatusItem]:
    return [StatusItem(f"e{n}", s, T0 + timedelta(hours=n)) for n, s in enumerate(statuses)]


def test_progress_marks_reached_skipped_current_and_future_steps() -> None:
    steps = progress(_changes(OrderStatus.PAYMENT_APPROVED, OrderStatus.SHIPPED))
    assert [s.state for s in steps] == [
        StepState.DONE, StepState.PASSED, StepState.PASSED, StepState.CURRENT, StepState.TODO,
    ]  # fmt: skip
    assert steps[0].at == T0 and steps[1].at is None


def test_a_canceled_order_ends_with_canceled_after_the_steps_it_reached() -> None:
    steps = progress(_changes(OrderStatus.PAYMENT_APPROVED, OrderStatus.CANCELED))
    assert [(s.status, s.state) for s in steps] == [
        (OrderStatus.PAYMENT_APPROVED, StepState.DONE), (OrderStatus.CANCELED, StepState.CURRENT),
    ]  # fmt: skip


def test_progress_of_an_order_with_no_status_yet_is_all_to_do() -> None:
    assert {s.state for s in progress([])} == {StepState.TODO}


@pytest.mark.parametrize(
    ("alias", "mask"),
    [
        ("ff2e6348a53a4d449af92be2a1011328@ct.example.com", MaskType.HARD),
        ("FF2E6348A53A4D449AF92BE2A1011328@CT.example.com", MaskType.HARD),
        ("johndoe@example.com-207700027841b.ct.example.com", MaskType.SOFT),
        ("john@example.com", None),
        ("not-hex@ct.example.com", None),
        ("", None),
    ],
)
def test_the_kind_of_an_alias_is_read_off_its_form(alias: str, mask: MaskType | None) -> None:
    assert mask_of(alias, "ct.example.com") is mask


def test_the_thread_is_oldest_first_with_failures_marked() -> None:
    entries = [
        timeline_event("o1", minutes=5, kind=TimelineKind.DELIVERY_FAILED, event_id="c"),
        timeline_event("o1", minutes=0, status=OrderStatus.PAYMENT_APPROVED, event_id="a"),
        timeline_event("o1", minutes=1, kind=TimelineKind.NOTIFICATION_SENT, event_id="b"),
        timeline_event("o1", minutes=2, kind=TimelineKind.UNKNOWN, event_id="d"),
    ]
    thread = conversation(entries, "ct.example.com")
    assert [item.event_id for item in thread.thread] == ["a", "b", "c"]
    assert [m.state for m in thread.messages] == [MessageState.SENT, MessageState.FAILED]
    assert thread.messages[1].failed and not thread.messages[0].failed
    assert thread.messages[0].sender.mask is MaskType.HARD
    assert thread.aliases() == ["a" * 32 + "@ct.example.com", "b" * 32 + "@ct.example.com"]


def test_roles_admins_may_do_what_support_may() -> None:
    assert Role.ADMIN.allows(Role.SUPPORT) and Role.ADMIN.allows(Role.ADMIN)
    assert Role.SUPPORT.allows(Role.SUPPORT) and not Role.SUPPORT.allows(Role.ADMIN)


def test_user_names_and_passwords_are_checked_with_a_reason() -> None:
    assert normalize_user_name(" Ada.Lovelace ") == "ada.lovelace"
    for bad in ("", "-ada", "ada lovelace", "a" * 65, "ada/../x"):
        with pytest.raises(AccountError):
            normalize_user_name(bad)
    with pytest.raises(AccountError, match="at least 12"):
        check_new_password("short")


def test_passwords_verify_only_against_their_own_hash() -> None:
    stored = hash_password("a long and correct password")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "a long and correct password")
    assert not verify_password(stored, "a long and wrong password")
    assert not verify_password(None, "a long and correct password")  # unknown user
    assert not verify_password("not a hash", "anything at all")


def test_api_tokens_parse_only_in_their_own_form() -> None:
    token = new_api_token()
    assert parse_api_token(token.value) == token.token_id
    assert token.hash != token.value and len(token.hash) == 64
    for bad in ("", "ct_abc_def", token.value + "x", token.value.replace("ct_", "xx_", 1)):
        assert parse_api_token(bad) is None


def test_sign_in_waits_grow_exponentially_past_the_limit_and_age_out() -> None:
    window = timedelta(minutes=15)
    failures = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    later = T0 + timedelta(seconds=3)
    assert backoff(failures[:2], 3, window, later) == 0  # within the limit
    assert backoff(failures, 3, window, later) == 29  # 30 s after the last one
    assert backoff([*failures, later], 3, window, later) == 60  # each one more doubles it
    five_more = [*failures, *(later + timedelta(seconds=n) for n in range(5))]
    assert backoff(five_more, 3, window, later + timedelta(seconds=4)) == 15 * 60  # capped
    assert backoff(failures, 3, window, T0 + timedelta(seconds=32)) == 0  # waited long enough
    assert backoff(failures, 3, window, T0 + timedelta(minutes=16)) == 0  # all aged out


def test_token_lifetimes_parse_in_four_units_or_never() -> None:
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration(" 30m ") == timedelta(minutes=30)
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("never") is None
    for bad in ("", "0d", "90", "1w", "-1d", "1.5h", "99999d", "9" * 1_000_000 + "d"):
        with pytest.raises(AccountError):
            parse_duration(bad)


def test_an_order_flow_window_closes_after_delivery_and_reopens_on_a_later_event() -> None:
    moving = next_window(None, terminal=False, at=T0, ttl_days=60, grace_days=7)
    assert moving == AliasWindow(T0 + timedelta(days=60), False, T0)
    delivered = next_window(
        moving, terminal=True, at=T0 + timedelta(days=3), ttl_days=60, grace_days=7
    )
    assert delivered == AliasWindow(T0 + timedelta(days=10), True, T0 + timedelta(days=3))
    later = T0 + timedelta(days=30)
    reopened = next_window(delivered, terminal=False, at=later, ttl_days=60, grace_days=7)
    assert reopened == AliasWindow(later + timedelta(days=7), True, later)
    assert next_window(reopened, terminal=True, at=T0, ttl_days=60, grace_days=7) is None


def test_an_event_that_gives_the_same_window_moves_nothing() -> None:
    moving = next_window(None, terminal=False, at=T0, ttl_days=60, grace_days=7)
    assert next_window(moving, terminal=False, at=T0, ttl_days=60, grace_days=7) is None
    closing = next_window(moving, terminal=True, at=T0, ttl_days=60, grace_days=7)
    assert closing == AliasWindow(T0 + timedelta(days=7), True, T0)  # same instant, closes
    assert next_window(closing, terminal=True, at=T0, ttl_days=60, grace_days=7) is None
    assert next_window(closing, terminal=False, at=T0, ttl_days=60, grace_days=7) is None


def test_cursors_round_trip_and_refuse_what_they_did_not_make() -> None:
    assert decode_cursor(encode_cursor(T0, "o-1")) == (T0, "o-1")
    assert decode_cursor(encode_cursor(None, "o-2")) == (None, "o-2")
    for bad in ("garbage!", "e30", encode_cursor(T0, "x")[:-3]):
        with pytest.raises(BadCursor):
            decode_cursor(bad)


def test_a_rejection_standing_for_more_refusals_says_how_many_everywhere() -> None:
    from worker.services.timeline import format_table

    rejected = timeline_event("o1", minutes=1, kind=TimelineKind.MESSAGE_REJECTED, event_id="r")
    counted = rejected.model_copy(update={"folded_refusals": 12})
    plain = timeline_event("o1", minutes=2, kind=TimelineKind.MESSAGE_REJECTED, event_id="s")
    thread = conversation([counted, plain], "ct.example.com")
    assert [m.folded_refusals for m in thread.messages] == [12, 0]
    lines = format_table("o1", [counted, plain]).splitlines()
    assert "(+12 more refused) Hello Jane" in lines[4]
    assert "more refused" not in lines[5]


def test_the_api_says_how_many_refusals_a_rejected_message_stands_for() -> None:
    from worker.adapters.order_queries import OrderSummary
    from worker.services.console import OrderPage
    from worker.web.api import _message

    rejected = timeline_event("o1", minutes=1, kind=TimelineKind.MESSAGE_REJECTED, event_id="r")
    thread = conversation([rejected.model_copy(update={"folded_refusals": 4})], "ct.example.com")
    order = OrderSummary("o1", "store-1", None, None, None, 1)
    page = OrderPage(order, thread, kept={}, revealed={})
    [item] = thread.messages
    assert _message(item, page, {}).model_dump(mode="json")["foldedRefusals"] == 4
