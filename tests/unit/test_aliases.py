"""Alias formats, the soft/hard policy and expiry."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from worker.domain.aliases import (
    MAX_ADDRESS,
    InvalidAddress,
    MaskType,
    SystemClock,
    choose_order_aliases,
    erased_alias_id,
    expires_at,
    is_alias_domain,
    is_erased_alias_id,
    is_expired,
    new_hard_alias,
    new_reverse_alias,
    new_soft_token,
    normalize_address,
    soft_alias,
)

DOMAIN = "ct.example.com"
HARD = re.compile(r"^[0-9a-f]{32}@ct\.example\.com$")
SOFT = re.compile(r"^johndoe@example\.com-[0-9a-f]{13}\.ct\.example\.com$")
LONG_DOMAIN = ".".join(["d" * 60] * 3) + ".com"  # 187 octets: valid on its own


def test_hard_alias_is_32_hex_at_the_domain() -> None:
    assert HARD.match(new_hard_alias(DOMAIN))


def test_hard_alias_lowercases_the_domain() -> None:
    assert HARD.match(new_hard_alias("CT.Example.COM"))


def test_soft_token_is_13_lowercase_hex() -> None:
    tokens = {new_soft_token() for _ in range(1000)}
    assert all(re.fullmatch(r"[0-9a-f]{13}", token) for token in tokens)
    assert len(tokens) == 1000


def test_soft_alias_keeps_the_real_address_readable() -> None:
    alias = soft_alias("JohnDoe@Example.com", "207700027841b", DOMAIN)
    assert alias == "johndoe@example.com-207700027841b.ct.example.com"
    assert alias is not None
    assert SOFT.match(alias)


def test_soft_alias_is_none_when_the_address_would_be_too_long() -> None:
    """A 60-char local part on a long domain exceeds 254 octets once the token and domain join."""
    assert soft_alias("a" * 60 + "@" + LONG_DOMAIN, new_soft_token(), DOMAIN) is None


def test_soft_alias_is_none_when_the_last_label_would_exceed_63() -> None:
    real = "john@example." + "c" * 50  # "c"*50 + "-" + 13 token chars = 64 octets
    assert soft_alias(real, new_soft_token(), DOMAIN) is None


@pytest.mark.parametrize(
    "real",
    ['"john doe"@example.com', "john..doe@example.com", "jo(hn)@example.com", "[1.2.3.4]"],
)
def test_soft_alias_is_none_for_addresses_a_dot_atom_cannot_hold(real: str) -> None:
    assert soft_alias(real, new_soft_token(), DOMAIN) is None


def test_soft_alias_refuses_a_malformed_token() -> None:
    with pytest.raises(ValueError, match="13 lowercase hex"):
        soft_alias("john@example.com", "../../x", DOMAIN)


def test_normalize_address_trims_and_lowercases() -> None:
    assert normalize_address("  John.Doe+Shop@Example.COM \n") == "john.doe+shop@example.com"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("john.example.com", "exactly one '@'"),
        ("a@b@example.com", "exactly one '@'"),
        ("@example.com", "local part .* is empty"),
        ("john@", "domain .* is empty"),
        ('"john doe"@example.com', "need quoting"),
        (".john@example.com", "stray dots"),
        ("john@-example.com", "letters, digits and inner hyphens"),
        ("john@example..com", "letters, digits and inner hyphens"),
        ("john@exa_mple.com", "letters, digits and inner hyphens"),
        ("a" * 65 + "@example.com", "longer than 64"),
        ("john@" + "a" * 64 + ".com", "longer than 63"),
        ("a" * 64 + "@" + ".".join(["d" * 60] * 4) + ".com", f"longer than {MAX_ADDRESS}"),
    ],
)
def test_normalize_address_names_the_broken_rule(address: str, reason: str) -> None:
    with pytest.raises(InvalidAddress, match=reason):
        normalize_address(address)


def test_soft_order_gets_two_soft_aliases_sharing_one_token() -> None:
    plan = choose_order_aliases(MaskType.SOFT, "JohnDoe@example.com", "shop@store.test", DOMAIN)
    assert plan.mask is MaskType.SOFT
    assert not plan.fell_back
    assert plan.token is not None
    assert SOFT.match(plan.customer_alias)
    assert plan.customer_alias == f"johndoe@example.com-{plan.token}.{DOMAIN}"
    assert plan.store_alias == f"shop@store.test-{plan.token}.{DOMAIN}"


def test_soft_order_falls_back_to_hard_for_both_when_one_alias_does_not_fit() -> None:
    """An order never mixes types: one overlong soft alias makes both aliases hard."""
    plan = choose_order_aliases(MaskType.SOFT, "a" * 60 + "@" + LONG_DOMAIN, "s@x.test", DOMAIN)
    assert plan.mask is MaskType.HARD
    assert plan.fell_back
    assert plan.token is None
    assert HARD.match(plan.customer_alias)
    assert HARD.match(plan.store_alias)


def test_soft_order_falls_back_when_customer_and_store_share_an_address() -> None:
    plan = choose_order_aliases(MaskType.SOFT, "same@x.test", "SAME@x.test", DOMAIN)
    assert plan.mask is MaskType.HARD
    assert plan.fell_back
    assert plan.customer_alias != plan.store_alias


def test_hard_order_gets_two_distinct_hard_aliases() -> None:
    plan = choose_order_aliases(MaskType.HARD, "johndoe@example.com", "shop@store.test", DOMAIN)
    assert (plan.mask, plan.token, plan.fell_back) == (MaskType.HARD, None, False)
    assert HARD.match(plan.customer_alias)
    assert HARD.match(plan.store_alias)
    assert plan.customer_alias != plan.store_alias


def test_reverse_alias_uses_the_order_token_in_soft_mode() -> None:
    alias = new_reverse_alias(MaskType.SOFT, "Ops@Carrier.test", "0123456789abc", DOMAIN)
    assert alias == f"ops@carrier.test-0123456789abc.{DOMAIN}"


def test_reverse_alias_falls_back_to_hard_when_soft_does_not_fit() -> None:
    sender = "a" * 60 + "@" + LONG_DOMAIN
    assert HARD.match(new_reverse_alias(MaskType.SOFT, sender, "0123456789abc", DOMAIN))


def test_reverse_alias_is_hard_in_hard_mode() -> None:
    assert HARD.match(new_reverse_alias(MaskType.HARD, "ops@carrier.test", None, DOMAIN))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ff2e6348a53a4d449af92be2a1011328@ct.example.com", True),
        ("johndoe@example.com-207700027841b.ct.example.com", True),
        ("X@CT.Example.Com", True),
        ("john@example.com", False),
        ("john@evilct.example.com", False),
        ("john@ct.example.com.evil.test", False),
        ("no-at-sign", False),
    ],
)
def test_is_alias_domain_accepts_the_domain_and_its_subdomains(
    address: str, expected: bool
) -> None:
    assert is_alias_domain(address, DOMAIN) is expected


def test_alias_expires_exactly_at_its_expiry() -> None:
    created = datetime(2025, 1, 1, tzinfo=UTC)
    expiry = expires_at(created, ttl_days=60)
    assert expiry == datetime(2025, 3, 2, tzinfo=UTC)
    assert not is_expired(expiry, expiry - timedelta(milliseconds=1))
    assert is_expired(expiry, expiry)


def test_expiry_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        expires_at(datetime(2025, 1, 1), 60)


def test_system_clock_is_utc_aware() -> None:
    assert SystemClock().now().utcoffset() == timedelta(0)


def test_an_erased_soft_alias_is_kept_under_its_hash_and_nothing_else() -> None:
    kept = erased_alias_id("9f" * 32)
    assert kept == "erased:" + "9f" * 32 and is_erased_alias_id(kept)
    assert not is_erased_alias_id("jane@example.org-207700027841b.ct.example.com")
    for wrong in ("", kept):  # nothing to hide behind, or hidden twice
        with pytest.raises(ValueError, match="keyed hash"):
            erased_alias_id(wrong)
