"""VERP bounce addresses: short, opaque, unforgeable, and valid exactly as long as the alias."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from worker.core.config import decode_key
from worker.core.crypto import bounce_token_keys, generate_key
from worker.domain.verp import BounceAddresses, BounceRef, TokenRejected

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=60)


def _keys(*encoded: str) -> list[bytes]:
    return bounce_token_keys([decode_key(k) for k in encoded])


@pytest.fixture
def addresses() -> BounceAddresses:
    return BounceAddresses(_keys(generate_key()), "ct.example.com")


def test_an_address_verifies_back_to_its_message_until_it_expires(
    addresses: BounceAddresses,
) -> None:
    event_id = str(uuid.uuid4())
    address = addresses.address(event_id, EXPIRES)
    ref = addresses.verify(address, NOW)
    assert isinstance(ref, BounceRef)
    assert ref.message_event_id == event_id
    # Rounded up to the hour, never earlier than the alias.
    assert EXPIRES <= ref.expires_at < EXPIRES + timedelta(hours=1)
    assert addresses.verify(address, ref.expires_at - timedelta(seconds=1)) == ref
    assert addresses.verify(address, ref.expires_at) == TokenRejected("expired")


def test_the_address_is_short_lowercase_and_reveals_nothing(addresses: BounceAddresses) -> None:
    event_id = str(uuid.uuid4())
    address = addresses.address(event_id, EXPIRES)
    local, domain = address.split("@")
    assert domain == "ct.example.com"
    assert local.startswith("bounces+") and len(local) <= 64
    assert local == local.lower() and local.isascii()
    assert event_id.replace("-", "") not in address and event_id[:8] not in address
    # The same message always gets the same address (a retry), another message another one.
    assert addresses.address(event_id, EXPIRES) == address
    assert addresses.address(str(uuid.uuid4()), EXPIRES) != address


def test_every_altered_character_is_refused(addresses: BounceAddresses) -> None:
    address = addresses.address(str(uuid.uuid4()), EXPIRES)
    local, domain = address.split("@")
    start = len("bounces+")
    for index in range(start, len(local)):
        swapped = "b" if local[index] != "b" else "c"
        forged = f"{local[:index]}{swapped}{local[index + 1 :]}@{domain}"
        assert isinstance(addresses.verify(forged, NOW), TokenRejected), index


def test_case_changes_on_the_way_do_not_matter(addresses: BounceAddresses) -> None:
    address = addresses.address(str(uuid.uuid4()), EXPIRES)
    assert isinstance(addresses.verify(f"<{address.upper()}>", NOW), BounceRef)


@pytest.mark.parametrize(
    "address",
    [
        "bounces+@ct.example.com",
        "bounces+abc@ct.example.com",
        "bounces+" + "a" * 45 + "@ct.example.com",
        "bounces+" + "1" * 45 + "@ct.example.com",  # not base32
        "someone@ct.example.com",
        "",
    ],
)
def test_malformed_addresses_are_refused(addresses: BounceAddresses, address: str) -> None:
    assert isinstance(addresses.verify(address, NOW), TokenRejected)


def test_another_domain_or_another_key_does_not_verify(addresses: BounceAddresses) -> None:
    address = addresses.address(str(uuid.uuid4()), EXPIRES)
    other_domain = address.replace("@ct.example.com", "@x.ct.example.com")
    assert addresses.verify(other_domain, NOW) == TokenRejected("malformed")
    stranger = BounceAddresses(_keys(generate_key()), "ct.example.com")
    assert stranger.verify(address, NOW) == TokenRejected("forged")


def test_addresses_made_before_a_key_rotation_still_verify() -> None:
    old, new = generate_key(), generate_key()
    before = BounceAddresses(_keys(old), "ct.example.com")
    after = BounceAddresses(_keys(new, old), "ct.example.com")
    event_id = str(uuid.uuid4())
    ref = after.verify(before.address(event_id, EXPIRES), NOW)
    assert isinstance(ref, BounceRef) and ref.message_event_id == event_id
    assert after.address(event_id, EXPIRES) != before.address(event_id, EXPIRES)


def test_token_keys_are_not_the_data_key() -> None:
    key = generate_key()
    derived = _keys(key)[0]
    assert decode_key(key) not in derived and len(derived) == 64


def test_is_bounce_address_recognises_the_form_only(addresses: BounceAddresses) -> None:
    assert addresses.is_bounce_address("Bounces+anything@CT.example.com")
    assert not addresses.is_bounce_address("bounces+x@sub.ct.example.com")
    assert not addresses.is_bounce_address("ff2e6348a53a4d449af92be2a1011328@ct.example.com")
