"""DKIM verification under RFC 8301's bounds, with OpenSSL doing the RSA (issue 19).

Pure: the key records are given as values, the verifier is dkimpy's parsing plus our checks.
"""

from __future__ import annotations

import base64
import secrets
import time

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from worker.adapters.dkim_bounds import KeyRefused, key_cache_info, usable_key
from worker.adapters.dns import DnsUnavailable
from worker.adapters.mail_auth import MAX_DKIM_SIGNATURES, _verify_all
from worker.domain.sender_auth import Result

MESSAGE = b"From: a@signer.test\r\nTo: b@x.test\r\nSubject: hi\r\n\r\nbody\r\n"


def _record(modulus: int, exponent: int) -> bytes:
    key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def _real_key(bits: int, exponent: int = 65537) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=exponent, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    numbers = key.public_key().public_numbers()
    return private, _record(numbers.n, numbers.e)


def _signed(private: bytes, selector: bytes = b"s1", message: bytes = MESSAGE) -> bytes:
    signature = dkim.sign(message, selector, b"signer.test", private, include_headers=[b"from"])
    return bytes(signature) + message


def test_a_good_signature_passes_through_openssl_and_a_tampered_one_fails() -> None:
    private, record = _real_key(2048)
    signed = _signed(private)
    assert _verify_all(signed, [("signer.test", "s1")], {"s1._domainkey.signer.test": record}) == [
        Result.PASS
    ]
    tampered = signed.replace(b"body", b"b0dy")
    assert _verify_all(
        tampered, [("signer.test", "s1")], {"s1._domainkey.signer.test": record}
    ) == [Result.FAIL]


def test_an_8192_bit_key_with_an_exponent_as_large_is_a_permerror_at_once() -> None:
    modulus = secrets.randbits(8192) | (1 << 8191) | 1
    exponent = (secrets.randbits(8190) | (1 << 8189) | 1) % modulus
    hostile = _record(modulus, exponent)
    private, _ = _real_key(1024)
    signed = _signed(private, b"s1")
    signed = _signed(private, b"s2", signed)
    signed = _signed(private, b"s3", signed)
    signatures = [("signer.test", s) for s in ("s3", "s2", "s1")]
    keys: dict[str, bytes | DnsUnavailable | None] = {
        f"{s}._domainkey.signer.test": hostile for _, s in signatures
    }
    started = time.perf_counter()
    results = _verify_all(signed, signatures, keys)
    assert time.perf_counter() - started < 0.2  # pure-Python RSA took seconds here
    assert results == [Result.PERMERROR] * 3


def test_a_key_seen_again_is_not_parsed_again_and_a_refused_one_is_not_remembered() -> None:
    private, record = _real_key(2048)
    keys: dict[str, bytes | DnsUnavailable | None] = {"s1._domainkey.signer.test": record}
    signed = _signed(private)
    assert _verify_all(signed, [("signer.test", "s1")], keys) == [Result.PASS]
    records, objects = key_cache_info()
    assert _verify_all(signed, [("signer.test", "s1")], keys) == [Result.PASS]
    records_after, objects_after = key_cache_info()
    assert (records_after.hits, records_after.misses) == (records.hits + 1, records.misses)
    assert (objects_after.hits, objects_after.misses) == (objects.hits + 1, objects.misses)
    assert _verify_all(signed.replace(b"body", b"b0dy"), [("signer.test", "s1")], keys) == [
        Result.FAIL
    ]  # the cached key still checks the signature itself
    small = _record(secrets.randbits(512) | (1 << 511) | 1, 65537)
    for _ in range(2):
        with pytest.raises(KeyRefused):
            usable_key(small)
    assert key_cache_info()[0].currsize == records_after.currsize


@pytest.mark.parametrize(
    ("bits", "exponent"), [(512, 65537), (4104, 65537), (2048, 65539), (2048, 2**64 + 1)]
)
def test_keys_outside_rfc_8301_are_refused(bits: int, exponent: int) -> None:
    modulus = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    with pytest.raises(KeyRefused):
        usable_key(_record(modulus, exponent))


def test_keys_within_the_bounds_are_usable() -> None:
    for bits in (1024, 4096):
        modulus = secrets.randbits(bits) | (1 << (bits - 1)) | 1
        usable_key(_record(modulus, 65537))
    usable_key(b"v=DKIM1; k=ed25519; p=" + base64.b64encode(secrets.token_bytes(32)))


def test_rsa_sha1_signatures_are_a_permerror() -> None:
    private, record = _real_key(1024)
    signed = _signed(private).replace(b"a=rsa-sha256", b"a=rsa-sha1")
    keys: dict[str, bytes | DnsUnavailable | None] = {"s1._domainkey.signer.test": record}
    assert _verify_all(signed, [("signer.test", "s1")], keys) == [Result.PERMERROR]


def test_at_most_a_few_signatures_are_evaluated() -> None:
    assert MAX_DKIM_SIGNATURES == 3
