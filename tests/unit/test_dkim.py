"""DKIM signing of final bytes, and the keys the workers refuse to start with.

dkimpy's verifier checks each signature here against the key record it would fetch from DNS; the
integration tests check the same against a real DNS server with Perl's Mail::DKIM as well.
"""

from __future__ import annotations

import time
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from worker.adapters.dkim_keys import generate_key, load_signer, read_key, write_key
from worker.core.config import ConfigError, load_settings
from worker.domain.dkim import DkimSigner, SigningKey, WeakKey, normalize_line_endings

MESSAGE = (
    b"From: Shop <ff2e6348a53a4d449af92be2a1011328@ct.example.com>\n"
    b"To: Jane Roe <jane@example.org-207700027841b.ct.example.com>\r\n"
    b"Subject: =?utf-8?q?Seu_pedido_foi_enviado?=\r\n"
    b"  (folded)\r\n"
    b"Date: Mon, 02 Nov 2026 12:00:00 +0000\r\n"
    b"Message-ID: <ct-1@ct.example.com>\r\n"
    b"Reply-To: Shop <ff2e6348a53a4d449af92be2a1011328@ct.example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Unsigned: whatever\r\n"
    b"\r\n" + b"Hello  Jane,\t\r\n\r\nyour order shipped.\n\n\n"
)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
# Weak on purpose: the workers must refuse it.
WEAK_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def _records(signer: DkimSigner) -> dict[bytes, bytes]:
    return {
        f"{k.selector}._domainkey.{signer.domain}.".encode(): k.dns_record().encode()
        for k in signer.keys
    }


def verify_all(message: bytes, records: dict[bytes, bytes]) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature of the message, fetching keys from `records`."""
    count = sum(1 for line in message.split(b"\r\n") if line.startswith(b"DKIM-Signature:"))
    verdicts = []
    for index in range(count):
        try:
            verdict = dkim.DKIM(message).verify(
                idx=index, dnsfunc=lambda name, timeout=5: records.get(name)
            )
        except dkim.DKIMException:  # dkimpy raises for some failures, returns False for others
            verdict = False
        verdicts.append(bool(verdict))
    return verdicts


@pytest.fixture
def signer() -> DkimSigner:
    return DkimSigner("ct.example.com", [SigningKey("s2026", RSA_KEY), SigningKey("e2026", ED_KEY)])


def test_both_signatures_verify_and_cover_the_visible_fields(signer: DkimSigner) -> None:
    signed = signer.sign(MESSAGE, timestamp=int(time.time()))
    assert verify_all(signed, _records(signer)) == [True, True]
    first = dkim.DKIM(signed)
    assert first.verify(dnsfunc=lambda name, timeout=5: _records(signer).get(name))
    tags = first.signature_fields
    assert (tags[b"a"], tags[b"c"], tags[b"d"], tags[b"s"]) == (
        b"rsa-sha256", b"relaxed/relaxed", b"ct.example.com", b"s2026",
    )  # fmt: skip
    names = [n.strip() for n in tags[b"h"].replace(b"\r\n\t", b"").split(b":")]
    for field in (b"from", b"to", b"subject", b"date", b"message-id", b"reply-to",
                  b"mime-version", b"content-type"):  # fmt: skip
        # Oversigned: one more than present, so none can be added on the way.
        assert names.count(field) == 2, field
    assert b"x-unsigned" not in names


def test_a_change_after_signing_breaks_the_signature(signer: DkimSigner) -> None:
    signed = signer.sign(MESSAGE, timestamp=int(time.time()))
    records = _records(signer)
    assert verify_all(signed.replace(b"your order", b"your 0rder"), records) == [False, False]
    assert verify_all(
        signed.replace(b"Subject: =?utf-8?q?Seu", b"Subject: =?utf-8?q?Teu"), records
    ) == [
        False,
        False,
    ]
    added = signed.replace(b"MIME-Version", b"Reply-To: attacker@evil.example\r\nMIME-Version", 1)
    assert verify_all(added, records) == [False, False]
    # Unsigned fields and relaxed-canonical whitespace may change: receivers add trace fields.
    traced = b"Received: from somewhere\r\n" + signed.replace(b"Hello  Jane", b"Hello Jane")
    assert verify_all(traced, records) == [True, True]


def test_the_signed_message_is_the_wire_form(signer: DkimSigner) -> None:
    signed = signer.sign(b"From: a@ct.example.com\nSubject: x\n\nline\rtwo", timestamp=1)
    assert b"\n" not in signed.replace(b"\r\n", b"") and b"\r" not in signed.replace(b"\r\n", b"")
    assert signed.endswith(b"line\r\ntwo\r\n")
    assert normalize_line_endings(b"a\nb") == b"a\r\nb\r\n"
    assert all(len(line) <= 78 for line in signed.split(b"\r\n"))


def test_weak_rsa_keys_are_refused() -> None:
    with pytest.raises(WeakKey, match="1024-bit"):
        SigningKey("s", WEAK_KEY)


def _env(tmp_path: Path, **files: bytes | None) -> dict[str, object]:
    values: dict[str, object] = {"dkim_selector": "s2026"}
    for name, data in files.items():
        if data is not None:
            path = tmp_path / name
            path.write_bytes(data)
            values[f"dkim_{name}"] = path
    return values


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey)
        else serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_load_signer_reads_pkcs1_and_pkcs8_keys_and_the_optional_ed25519(tmp_path: Path) -> None:
    settings = load_settings(
        **_env(tmp_path, private_key_file=_pem(RSA_KEY), ed25519_key_file=_pem(ED_KEY))
    )
    signer = load_signer(settings)
    assert [k.selector for k in signer.keys] == ["s2026", "s2026-ed25519"]
    assert [k.algorithm for k in signer.keys] == ["rsa-sha256", "ed25519-sha256"]


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"private_key_file": None}, "CT_DKIM_PRIVATE_KEY_FILE is not set"),
        ({"private_key_file": b"not a key"}, "CT_DKIM_PRIVATE_KEY_FILE: "),
        (
            {"private_key_file": _pem(WEAK_KEY)},
            "CT_DKIM_PRIVATE_KEY_FILE holds a 1024-bit RSA key",
        ),
        ({"private_key_file": _pem(ED_KEY)}, "CT_DKIM_PRIVATE_KEY_FILE: "),
        (
            {"private_key_file": _pem(ec.generate_private_key(ec.SECP256R1()))},
            "CT_DKIM_PRIVATE_KEY_FILE: ",
        ),
        (
            {"private_key_file": _pem(RSA_KEY), "ed25519_key_file": _pem(RSA_KEY)},
            "CT_DKIM_ED25519_KEY_FILE: ",
        ),
    ],
)
def test_a_bad_key_stops_start_up_with_one_line_naming_the_variable(
    tmp_path: Path, files: dict[str, bytes | None], needle: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_signer(load_settings(**_env(tmp_path, **files)))
    message = str(caught.value)
    assert needle in message and "\n" not in message and "ct dkim keygen" in message


def test_an_unreadable_key_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=r"CT_DKIM_PRIVATE_KEY_FILE: cannot read .*nope\.pem"):
        read_key(missing, "CT_DKIM_PRIVATE_KEY_FILE", "rsa")
    with pytest.raises(ConfigError, match="CT_DKIM_SELECTOR is not set"):
        load_signer(load_settings(dkim_private_key_file=missing))


def test_written_keys_are_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "dkim.pem"
    key = generate_key("rsa")
    write_key(key, path, overwrite=False)
    assert path.stat().st_mode & 0o777 == 0o600
    assert isinstance(read_key(path, "X", "rsa"), rsa.RSAPrivateKey)
    with pytest.raises(FileExistsError):
        write_key(generate_key("rsa"), path, overwrite=False)
    with pytest.raises(ValueError, match="2048 bits"):
        generate_key("rsa", 1024)
