"""DKIM public keys and signatures held to RFC 8301 before any verification work, and the RSA
check done by OpenSSL (through `cryptography`) instead of dkimpy's pure-Python arithmetic.

A published key is attacker input: an 8192-bit modulus with an exponent as large makes one
pure-Python verification cost seconds. RFC 8301 section 3.2 has verifiers accept RSA keys of
1024 to 4096 bits; rsa-sha1 is not to be used (section 3.1). Everything else is a `permerror`
before a hash is computed or a number exponentiated.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Sequence
from typing import Any, Final

import dkim
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

MIN_RSA_BITS: Final = 1024
MAX_RSA_BITS: Final = 4096
# 65537 is what every key generator uses; 3 is still met in old keys. Anything else is unusual.
RSA_EXPONENTS: Final = frozenset({3, 65537})
ALGORITHMS: Final = frozenset({b"rsa-sha256", b"ed25519-sha256"})
# A signature field or key record longer than this is no real one (a 4096-bit b= is ~690).
MAX_SIGNATURE_CHARS: Final = 8192
MAX_KEY_RECORD_CHARS: Final = 4096
# Parsed keys kept by their content, so no entry can outlive its DNS answer's meaning: the
# resolver's cache decides for how long (the TTL) a record is served, this one only saves the
# DER/ASN.1 parse and OpenSSL's key setup when the same record comes again.
KEY_CACHE_SIZE: Final = 4096


class KeyRefused(Exception):
    """The signature or its key is outside what RFC 8301 lets a verifier accept."""


def check_signature(headers: Sequence[tuple[bytes, bytes]], index: int) -> None:
    """The `index`th DKIM-Signature's algorithm is one we verify, and its size is sane."""
    signatures = [value for name, value in headers if name.lower() == b"dkim-signature"]
    if index >= len(signatures) or len(signatures[index]) > MAX_SIGNATURE_CHARS:
        raise KeyRefused("signature missing or oversized")
    try:
        tags = dkim.util.parse_tag_value(signatures[index])
    except dkim.util.InvalidTagValueList as exc:
        raise KeyRefused("unreadable signature") from exc
    algorithm = b"".join(tags.get(b"a", b"").split()).lower()
    if algorithm not in ALGORITHMS:
        raise KeyRefused(f"algorithm {algorithm!r} refused (RFC 8301)")


def usable_key(record: bytes) -> None:
    """Raise `KeyRefused` unless the key record holds a key within RFC 8301's bounds."""
    _usable_key(record)


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _usable_key(record: bytes) -> None:
    # lru_cache keeps only the records that passed: a refusal raises, and is checked again.
    if len(record) > MAX_KEY_RECORD_CHARS:
        raise KeyRefused("key record oversized")
    try:
        tags = dkim.util.parse_tag_value(record)
    except dkim.util.InvalidTagValueList as exc:
        raise KeyRefused("unreadable key record") from exc
    kind = tags.get(b"k", b"rsa").strip().lower()
    if kind == b"ed25519":
        return  # fixed size: nothing to bound
    if kind != b"rsa":
        raise KeyRefused("unknown key type")
    try:
        der = base64.b64decode(b"".join(tags.get(b"p", b"").split()), validate=True)
        key = serialization.load_der_public_key(der)
    except (binascii.Error, ValueError, UnsupportedAlgorithm) as exc:
        raise KeyRefused("unreadable RSA key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyRefused("not an RSA key")
    if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise KeyRefused(f"a {key.key_size}-bit key (RFC 8301: 1024 to 4096)")
    if key.public_numbers().e not in RSA_EXPONENTS:
        raise KeyRefused("unusual public exponent")


def openssl_rsa_verify(hash_object: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """dkimpy's `RSASSA_PKCS1_v1_5_verify`, computed by OpenSSL.

    `hash_object` is the SHA-256 of the signed data (`check_signature` allows no other RSA
    algorithm); `public_key` is dkimpy's parsed key, already bounded by `usable_key`.
    """
    key = _rsa_key(public_key["publicExponent"], public_key["modulus"])
    if key.key_size > MAX_RSA_BITS:  # never reached through `usable_key`; a last guard
        return False
    try:
        key.verify(signature, hash_object.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _rsa_key(exponent: int, modulus: int) -> rsa.RSAPublicKey:
    """OpenSSL's key object for these numbers, built once per key seen."""
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def key_cache_info() -> tuple[functools._CacheInfo, functools._CacheInfo]:
    """Hits and misses of the bounded-record and the key-object caches (for tests and the bench)."""
    return _usable_key.cache_info(), _rsa_key.cache_info()
