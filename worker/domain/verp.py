"""VERP return paths: `bounces+<token>@<domain>`, one per message we send.

The token names the message that bounced (the timeline event id of its NOTIFICATION_SENT or
MESSAGE_FORWARDED) and when the token stops working (the alias validity), encrypted and
authenticated, so it reveals nothing and cannot be forged or altered:

    token = base32( version | tag | AES-256-CTR(enc key, nonce = tag)(expiry hours | event id) )
    tag   = HMAC-SHA256(mac key, version | expiry hours | event id)[:8]

A synthetic-IV construction (as in RFC 5297), written here because the library's AES-SIV has a
16-byte tag, which would make the address too long for a local part (64 octets): an 8-byte tag
leaves a forger one chance in 2^64 per attempt, and each attempt costs them an SMTP transaction
that we answer 550. It is deterministic, so every retry of a message carries the same address.
Base32 without padding, lowercase: mail systems may change the case of a local part.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

LOCAL_PREFIX: Final = "bounces+"
VERSION: Final = 1
TAG_BYTES: Final = 8
_EPOCH: Final = datetime(2024, 1, 1, tzinfo=UTC)
_EXPIRY_BYTES: Final = 3  # hours since _EPOCH: good until the year 3900
_PLAIN_BYTES: Final = _EXPIRY_BYTES + 16
_TOKEN_BYTES: Final = 1 + TAG_BYTES + _PLAIN_BYTES
_TOKEN_CHARS: Final = math.ceil(_TOKEN_BYTES * 8 / 5)


@dataclass(frozen=True, slots=True)
class BounceRef:
    """What a verified token says: which message bounced, and until when it may."""

    message_event_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenRejected:
    """Why a bounce address does not verify; safe to log (it holds no part of the token)."""

    reason: str  # "malformed", "forged" or "expired"


class BounceAddresses:
    """Makes and verifies the bounce addresses of one alias domain.

    `keys` are 64-byte token keys (crypto.bounce_token_keys), the current one first: addresses
    are made with it and verified with any, so a key rotation keeps old addresses working.
    """

    def __init__(self, keys: Sequence[bytes], domain: str) -> None:
        if not keys or any(len(k) != 64 for k in keys):
            raise ValueError("bounce token keys are 64 bytes each, the current one first")
        self._keys = [(k[:32], k[32:]) for k in keys]
        self.domain = domain.lower().rstrip(".")

    def address(self, message_event_id: str, expires_at: datetime) -> str:
        hours = math.ceil((expires_at - _EPOCH) / timedelta(hours=1))
        if not 0 < hours < 2 ** (8 * _EXPIRY_BYTES):
            raise ValueError("the expiry is outside what a bounce token can hold")
        plain = hours.to_bytes(_EXPIRY_BYTES, "big") + uuid.UUID(message_event_id).bytes
        mac_key, enc_key = self._keys[0]
        tag = _tag(mac_key, plain)
        token = bytes([VERSION]) + tag + _crypt(enc_key, tag, plain)
        text = base64.b32encode(token).decode("ascii").rstrip("=").lower()
        return f"{LOCAL_PREFIX}{text}@{self.domain}"

    def is_bounce_address(self, address: str) -> bool:
        """Whether `address` has the form of one of ours (verified or not)."""
        local, _, domain = address.strip().lower().rpartition("@")
        return domain == self.domain and local.startswith(LOCAL_PREFIX)

    def verify(self, address: str, now: datetime) -> BounceRef | TokenRejected:
        local, _, domain = address.strip().strip("<>").lower().rpartition("@")
        text = local.removeprefix(LOCAL_PREFIX)
        if domain != self.domain or text == local or len(text) != _TOKEN_CHARS:
            return TokenRejected("malformed")
        try:
            token = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
        except (binascii.Error, ValueError):
            return TokenRejected("malformed")
        # The last base32 character carries padding bits: only the spelling we make is ours, so
        # one message has exactly one return path.
        canonical = base64.b32encode(token).decode("ascii").rstrip("=").lower() == text
        if not canonical or len(token) != _TOKEN_BYTES or token[0] != VERSION:
            return TokenRejected("malformed")
        tag, sealed = token[1 : 1 + TAG_BYTES], token[1 + TAG_BYTES :]
        for mac_key, enc_key in self._keys:
            plain = _crypt(enc_key, tag, sealed)
            if hmac.compare_digest(_tag(mac_key, plain), tag):
                break
        else:
            return TokenRejected("forged")
        expires = _EPOCH + timedelta(hours=int.from_bytes(plain[:_EXPIRY_BYTES], "big"))
        if now >= expires:
            return TokenRejected("expired")
        return BounceRef(str(uuid.UUID(bytes=plain[_EXPIRY_BYTES:])), expires)


def _tag(mac_key: bytes, plain: bytes) -> bytes:
    return hmac.new(mac_key, bytes([VERSION]) + plain, hashlib.sha256).digest()[:TAG_BYTES]


def _crypt(enc_key: bytes, tag: bytes, data: bytes) -> bytes:
    """AES-CTR keyed by the tag: encrypts and decrypts alike."""
    nonce = tag + bytes(16 - TAG_BYTES)
    cipher = Cipher(algorithms.AES(enc_key), modes.CTR(nonce)).encryptor()
    return cipher.update(data) + cipher.finalize()
