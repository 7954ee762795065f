"""The claim keys that make an order's aliases one per role (and per external sender)."""

from __future__ import annotations

import pytest

from worker.adapters.alias_writes import order_key
from worker.contracts.events import ParticipantRole


def test_order_keys_are_one_per_order_role_and_sender() -> None:
    customer = order_key("o-1", ParticipantRole.CUSTOMER)
    store = order_key("o-1", ParticipantRole.STORE)
    carrier = order_key("o-1", ParticipantRole.EXTERNAL, sender_hash="ab12")
    assert customer == "o-1\x1fCUSTOMER"
    assert carrier == "o-1\x1fEXTERNAL\x1fab12"
    assert len({customer, store, carrier, order_key("o-2", ParticipantRole.CUSTOMER)}) == 4


def test_order_key_needs_a_sender_hash_exactly_for_external() -> None:
    with pytest.raises(ValueError, match="sender's hash"):
        order_key("o-1", ParticipantRole.EXTERNAL)
    with pytest.raises(ValueError, match="no sender hash"):
        order_key("o-1", ParticipantRole.CUSTOMER, sender_hash="ab12")
    with pytest.raises(ValueError, match="separator"):
        order_key("o-1\x1fSTORE", ParticipantRole.CUSTOMER)
