"""Encryption at rest of real addresses: binding to the alias, tampering, key rotation, hashes."""

from __future__ import annotations

import os

import pytest

from worker.core.config import decode_key
from worker.core.crypto import NONCE_BYTES, AddressCipher, DecryptError, generate_key, key_id

ALIAS = "ff2e6348a53a4d449af92be2a1011328@ct.example.com"
OTHER_ALIAS = "0e2c3cf1b5f54c4aa4e4a0bfb2f7f0c1@ct.example.com"
REAL = "johndoe@example.com"


def new_key() -> bytes:
    return os.urandom(32)


def test_round_trip_returns_the_address() -> None:
    cipher = AddressCipher([new_key()])
    assert cipher.decrypt(cipher.encrypt(REAL, ALIAS), ALIAS) == REAL


def test_round_trip_keeps_non_ascii_text() -> None:
    cipher = AddressCipher([new_key()])
    assert cipher.decrypt(cipher.encrypt("joão@exemplo.com.br", ALIAS), ALIAS) == (
        "joão@exemplo.com.br"
    )


def test_blob_layout_is_version_key_id_nonce_ciphertext() -> None:
    key = new_key()
    blob = AddressCipher([key]).encrypt(REAL, ALIAS)
    assert blob[0] == 1
    assert blob[1:5] == key_id(key)
    assert len(blob) == 1 + 4 + NONCE_BYTES + len(REAL) + 16


def test_each_encryption_uses_a_fresh_nonce() -> None:
    cipher = AddressCipher([new_key()])
    assert cipher.encrypt(REAL, ALIAS) != cipher.encrypt(REAL, ALIAS)


def test_a_blob_copied_to_another_alias_does_not_decrypt() -> None:
    cipher = AddressCipher([new_key()])
    blob = cipher.encrypt(REAL, ALIAS)
    with pytest.raises(DecryptError, match="another record"):
        cipher.decrypt(blob, OTHER_ALIAS)


def test_the_alias_binding_ignores_case() -> None:
    cipher = AddressCipher([new_key()])
    assert cipher.decrypt(cipher.encrypt(REAL, ALIAS), ALIAS.upper()) == REAL


@pytest.mark.parametrize("position", [5, 5 + NONCE_BYTES, -1])
def test_a_flipped_bit_anywhere_fails_to_decrypt(position: int) -> None:
    cipher = AddressCipher([new_key()])
    blob = bytearray(cipher.encrypt(REAL, ALIAS))
    blob[position] ^= 0x01
    with pytest.raises(DecryptError, match="altered"):
        cipher.decrypt(bytes(blob), ALIAS)


def test_truncated_and_unknown_version_blobs_are_refused() -> None:
    cipher = AddressCipher([new_key()])
    blob = cipher.encrypt(REAL, ALIAS)
    with pytest.raises(DecryptError, match="too short"):
        cipher.decrypt(blob[:20], ALIAS)
    with pytest.raises(DecryptError, match="unknown blob version 2"):
        cipher.decrypt(b"\x02" + blob[1:], ALIAS)


def test_rotation_reads_old_blobs_and_flags_them_for_reencryption() -> None:
    old, new = new_key(), new_key()
    old_blob = AddressCipher([old]).encrypt(REAL, ALIAS)
    rotated = AddressCipher([new, old])
    assert rotated.decrypt(old_blob, ALIAS) == REAL
    assert rotated.needs_reencrypt(old_blob)
    fresh = rotated.encrypt(REAL, ALIAS)
    assert not rotated.needs_reencrypt(fresh)
    assert rotated.current_key_id == key_id(new).hex()


def test_a_blob_under_a_dropped_key_names_the_missing_key_id() -> None:
    old = new_key()
    blob = AddressCipher([old]).encrypt(REAL, ALIAS)
    with pytest.raises(DecryptError, match=f"id {key_id(old).hex()}"):
        AddressCipher([new_key()]).decrypt(blob, ALIAS)


def test_bad_key_lists_are_refused() -> None:
    key = new_key()
    with pytest.raises(ValueError, match="at least"):
        AddressCipher([])
    with pytest.raises(ValueError, match="32 bytes, got 16"):
        AddressCipher([key[:16]])
    with pytest.raises(ValueError, match="listed twice"):
        AddressCipher([key, key])


def test_address_hash_is_keyed_stable_and_case_insensitive() -> None:
    key = new_key()
    cipher = AddressCipher([key])
    digest = cipher.address_hash(" JohnDoe@Example.com ")
    assert digest == AddressCipher([key]).address_hash(REAL)
    assert len(digest) == 64
    assert digest != cipher.address_hash("janedoe@example.com")
    assert digest != AddressCipher([new_key()]).address_hash(REAL)


def test_address_hash_follows_the_current_key() -> None:
    old, new = new_key(), new_key()
    assert AddressCipher([new, old]).address_hash(REAL) == AddressCipher([new]).address_hash(REAL)


def test_generated_keys_decode_to_32_bytes_the_way_settings_read_them() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(decode_key(text)) == 32 for text in keys)
