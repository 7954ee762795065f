"""Sliding-window rate limits, marketing markers, and one route per SMTP transaction."""

from __future__ import annotations

from email.message import EmailMessage

from worker.domain.abuse import (
    Admitted,
    OverLimit,
    RateKeys,
    RateLimit,
    SlidingWindowLimiter,
    marketing_markers,
)
from worker.domain.transactions import fits_transaction

HOUR = 3600.0
ALIAS = "c1f0@relay.example"


def limiter(alias: int = 3, domain: int = 0, ip: int = 0, **kwargs: int) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(
        [
            RateLimit("alias", alias, HOUR),
            RateLimit("domain", domain, HOUR),
            RateLimit("ip", ip, HOUR),
        ],
        **kwargs,
    )


def test_the_window_slides_rather_than_resetting_on_the_hour() -> None:
    limits = limiter(alias=3)
    keys = RateKeys(ALIAS)
    for at in (0.0, 1000.0, 2000.0):
        assert limits.admit(keys, now=at) == Admitted()
    assert isinstance(limits.admit(keys, now=3000.0), OverLimit)
    # At 3600 the first message leaves the window, so exactly one more fits.
    assert limits.admit(keys, now=HOUR + 0.5) == Admitted()
    assert isinstance(limits.admit(keys, now=HOUR + 1.0), OverLimit)
    assert limits.admit(keys, now=HOUR + 1000.5) == Admitted()


def test_one_refusal_per_window_is_marked_for_the_timeline() -> None:
    limits = limiter(alias=1)
    keys = RateKeys(ALIAS)
    assert limits.admit(keys, now=0.0) == Admitted()
    first = limits.admit(keys, now=10.0)
    again = [limits.admit(keys, now=10.0 + i) for i in range(1, 50)]
    assert first == OverLimit("alias", ALIAS, record=True, window_started=10.0)
    assert all(isinstance(o, OverLimit) and not o.record for o in again)
    # A retried refusal is not counted, so the alias is free again an hour after its message.
    assert limits.admit(keys, now=HOUR + 1.0) == Admitted()
    later = limits.admit(keys, now=HOUR + 20.0)
    assert later == OverLimit("alias", ALIAS, record=True, window_started=HOUR + 20.0)


def test_each_scope_counts_on_its_own_and_the_first_full_one_refuses() -> None:
    limits = limiter(alias=10, domain=2, ip=10)
    results = [
        limits.admit(RateKeys(f"a{i}@relay.example", "spam.example", "192.0.2.7"), now=float(i))
        for i in range(3)
    ]
    assert results[:2] == [Admitted(), Admitted()]
    assert isinstance(results[2], OverLimit) and results[2].scope == "domain"
    # Another domain from the same IP still fits: the IP has seen two of its ten.
    other = RateKeys("b@relay.example", "other.example", "192.0.2.7")
    assert limits.admit(other, now=4.0) == Admitted()


def test_a_domain_flood_is_recorded_once_per_order_alias_it_hits() -> None:
    limits = limiter(alias=0, domain=1)
    assert limits.admit(RateKeys("a@r", "spam.example"), now=0.0) == Admitted()
    hits = [
        limits.admit(RateKeys(a, "spam.example"), now=1.0) for a in ("a@r", "b@r", "a@r", "b@r")
    ]
    assert [h.record for h in hits if isinstance(h, OverLimit)] == [True, True, False, False]


def test_a_limit_of_zero_is_no_limit() -> None:
    limits = limiter(alias=0)
    assert all(limits.admit(RateKeys(ALIAS), now=float(i)) == Admitted() for i in range(500))


def test_memory_is_bounded_by_forgetting_the_least_recent_keys() -> None:
    limits = limiter(alias=1, max_keys=10)
    for i in range(100):
        assert limits.admit(RateKeys(f"{i}@r"), now=float(i)) == Admitted()
    assert isinstance(limits.admit(RateKeys("99@r"), now=100.0), OverLimit)
    # Key 0 was forgotten: its window starts afresh.
    assert limits.admit(RateKeys("0@r"), now=101.0) == Admitted()


def _raw(**headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = "News <news@brand.example>"
    message["Subject"] = "Deals"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("buy")
    return message.as_bytes()


def test_bulk_and_list_markers_are_found_and_plain_mail_has_none() -> None:
    assert marketing_markers(_raw()) == ()
    assert marketing_markers(_raw(List_Unsubscribe="<https://brand.example/u>")) == (
        "List-Unsubscribe",
    )
    assert marketing_markers(_raw(List_Id="Deals <deals.brand.example>", Precedence="BULK")) == (
        "List-Id",
        "Precedence: bulk",
    )
    assert marketing_markers(_raw(Precedence="list")) == ("Precedence: list",)
    assert marketing_markers(_raw(Precedence="first-class")) == ()


def test_a_transaction_carries_one_route_and_repeats_of_it() -> None:
    assert fits_transaction([], ALIAS)
    assert fits_transaction([ALIAS], ALIAS.upper())
    assert not fits_transaction([ALIAS], "5a7e@relay.example")
