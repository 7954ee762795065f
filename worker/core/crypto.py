"""Encryption at rest for real addresses and kept messages, and keyed hashes to look addresses up.

A stored blob is `version (1) | key id (4) | nonce (12) | AES-256-GCM ciphertext+tag`. The key id
lets a reader pick the right key while old and new keys coexist during a rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION: Final = 1
KEY_BYTES: Final = 32
KEY_ID_BYTES: Final = 4
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
_HEADER_BYTES: Final = 1 + KEY_ID_BYTES
_HASH_INFO: Final = b"ct-address-hash-v1"
_BOUNCE_TOKEN_INFO: Final = b"ct-bounce-token-v1"


class DecryptError(Exception):
    """A stored address cannot be read back; the message says why (never the address)."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:KEY_ID_BYTES]


def generate_key() -> str:
    """A fresh data key in the form `CT_ENCRYPTION_KEY` takes (urlsafe base64 of 32 bytes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


class AddressCipher:
    """Encrypts under the first key; decrypts under any of them, so retired keys still read."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("AddressCipher needs at least the current key")
        self._ciphers: dict[bytes, AESGCM] = {}
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ValueError(f"a data key is {KEY_BYTES} bytes, got {len(key)}")
            kid = key_id(key)
            if kid in self._ciphers:
                raise ValueError(f"two data keys share the id {kid.hex()}: is a key listed twice?")
            self._ciphers[kid] = AESGCM(key)
        self._current_id = key_id(keys[0])
        # Rotating the key changes every hash, so lookups by hash (is this sender the customer?
        # which reverse alias does this carrier already have?) miss for data hashed under the old
        # key: reverse aliases are then created anew instead of reused. That is acceptable because
        # they are per order and expire; the order's own two aliases are found by order key.
        self._hash_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_HASH_INFO
        ).derive(keys[0])

    @property
    def current_key_id(self) -> str:
        return self._current_id.hex()

    def encrypt(self, plaintext: str, associated: str) -> bytes:
        """Encrypt `plaintext` bound to `associated` (the alias it belongs to)."""
        return self.encrypt_bytes(plaintext.encode("utf-8"), associated)

    def decrypt(self, blob: bytes, associated: str) -> str:
        return self.decrypt_bytes(blob, associated).decode("utf-8")

    def encrypt_bytes(self, plaintext: bytes, associated: str) -> bytes:
        """Encrypt bytes (a whole message, say) bound to `associated`, under the current key."""
        header = bytes([VERSION]) + self._current_id
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self._current_id].encrypt(nonce, plaintext, _aad(header, associated))
        return header + nonce + sealed

    def decrypt_bytes(self, blob: bytes, associated: str) -> bytes:
        kid = self._key_id_of(blob)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptError(
                f"no configured key has id {kid.hex()}: add the retired key to "
                "CT_ENCRYPTION_OLD_KEYS"
            )
        start = _HEADER_BYTES + NONCE_BYTES
        try:
            return cipher.decrypt(
                blob[_HEADER_BYTES:start], blob[start:], _aad(blob[:_HEADER_BYTES], associated)
            )
        except InvalidTag:
            raise DecryptError(
                "authentication failed: the blob was altered or belongs to another record"
            ) from None

    def needs_reencrypt(self, blob: bytes) -> bool:
        """True when `blob` is under a retired key and should be rewritten under the current one."""
        return self._key_id_of(blob) != self._current_id

    def address_hash(self, address: str) -> str:
        """A stable keyed fingerprint of an address, to match senders without storing plaintext.

        Only trimmed and lowercased, not syntax-checked: senders on the wire can be anything, and
        the hash of an odd address must still be computable and equal to itself.
        """
        canonical = address.strip().lower().encode("utf-8")
        return hmac.new(self._hash_key, canonical, hashlib.sha256).hexdigest()

    @staticmethod
    def _key_id_of(blob: bytes) -> bytes:
        if len(blob) < _HEADER_BYTES + NONCE_BYTES + TAG_BYTES:
            raise DecryptError(f"the blob is {len(blob)} bytes, too short to be a sealed value")
        if blob[0] != VERSION:
            raise DecryptError(f"unknown blob version {blob[0]}, this build reads {VERSION}")
        return bytes(blob[1:_HEADER_BYTES])


def bounce_token_keys(keys: Sequence[bytes]) -> list[bytes]:
    """The keys of VERP bounce tokens (worker/domain/verp.py), one per data key, current first.

    Derived rather than the data key itself, so that no token operation ever touches the key that
    guards the addresses; the retired keys still verify the tokens they issued until those expire.
    """
    return [
        HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_BOUNCE_TOKEN_INFO).derive(key)
        for key in keys
    ]


def _aad(header: bytes, associated: str) -> bytes:
    # The header is authenticated too, so a blob cannot be relabelled with another version or id.
    # Aliases are case-insensitive addresses, so their case must not decide whether a blob opens.
    return header + associated.strip().lower().encode("utf-8")


# Personal fields of timeline events, and kept messages, are sealed per data subject (a customer's
# normalised real address): each subject has a data key of its own, stored only wrapped by the
# deployment key, so destroying that one wrapped key makes every copy of their data unreadable,
# on Kafka's immutable log and in backups alike (crypto-shredding).
SEALED_PREFIX: Final = "ct-sealed:v1:"
_WRAP_NAMESPACE: Final = "subject-key:"


def wrap_subject_key(cipher: AddressCipher, data_key: bytes, subject_id: str) -> bytes:
    """The subject's data key sealed under the deployment key, bound to the subject's id."""
    return cipher.encrypt_bytes(data_key, _WRAP_NAMESPACE + subject_id)


def unwrap_subject_key(cipher: AddressCipher, wrapped: bytes, subject_id: str) -> bytes:
    return cipher.decrypt_bytes(wrapped, _WRAP_NAMESPACE + subject_id)


class SubjectKey:
    """One data subject's key: seals text fields as `ct-sealed:v1:<base64>` and whole blobs.

    The associated data is the subject id (and a purpose), so a sealed value cannot be opened as
    another subject's, nor a field as a message.
    """

    __slots__ = ("_aead", "subject_id")

    def __init__(self, subject_id: str, data_key: bytes) -> None:
        if len(data_key) != KEY_BYTES:
            raise ValueError(f"a subject key is {KEY_BYTES} bytes, got {len(data_key)}")
        self.subject_id = subject_id
        self._aead = AESGCM(data_key)

    @staticmethod
    def new_key() -> bytes:
        return secrets.token_bytes(KEY_BYTES)

    def seal_text(self, text: str) -> str:
        """`text` sealed; empty text and text sealed already stay as they are."""
        if not text or is_sealed(text):
            return text
        sealed = self.seal_bytes(text.encode("utf-8"), "field")
        return SEALED_PREFIX + base64.urlsafe_b64encode(sealed).decode("ascii")

    def open_text(self, text: str) -> str:
        if not is_sealed(text):
            return text
        try:
            blob = base64.urlsafe_b64decode(text[len(SEALED_PREFIX) :])
        except ValueError:
            raise DecryptError("a sealed field is not base64") from None
        return self.open_bytes(blob, "field").decode("utf-8")

    def seal_bytes(self, plaintext: bytes, purpose: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, self._aad(purpose))

    def open_bytes(self, blob: bytes, purpose: str) -> bytes:
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise DecryptError(f"the blob is {len(blob)} bytes, too short to be a sealed value")
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._aad(purpose))
        except InvalidTag:
            raise DecryptError("authentication failed: sealed under another subject") from None

    def _aad(self, purpose: str) -> bytes:
        return f"{purpose}:{self.subject_id}".encode()


def is_sealed(text: str | None) -> bool:
    return bool(text) and str(text).startswith(SEALED_PREFIX)
