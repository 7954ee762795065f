"""DKIM keys: read once at start-up from the files the settings name, or made by `ct dkim keygen`.

A worker that would send unsigned or weakly signed mail refuses to start instead, with one line
naming the variable to fix: mailbox providers drop or spam-folder such mail, which nobody would
notice until customers say they got nothing.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Final, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from worker.core.config import DKIM_KEY_HINT, ConfigError, Settings
from worker.domain.dkim import MIN_RSA_BITS, DkimSigner, PrivateKey, SigningKey, WeakKey

Algorithm = Literal["rsa", "ed25519"]
RSA_VARIABLE: Final = "CT_DKIM_PRIVATE_KEY_FILE"
ED25519_VARIABLE: Final = "CT_DKIM_ED25519_KEY_FILE"
_MAX_KEY_FILE: Final = 64 * 1024


def load_signer(settings: Settings) -> DkimSigner:
    """The signer for CT_DOMAIN with the configured keys; ConfigError names what is wrong."""
    if settings.dkim_selector is None:
        raise ConfigError(f"CT_DKIM_SELECTOR is not set: mail must be DKIM-signed; {DKIM_KEY_HINT}")
    if settings.dkim_private_key_file is None:
        raise ConfigError(f"{RSA_VARIABLE} is not set: mail must be DKIM-signed; {DKIM_KEY_HINT}")
    keys = [
        _signing_key(
            settings.dkim_selector, read_key(settings.dkim_private_key_file, RSA_VARIABLE, "rsa")
        )
    ]
    if settings.dkim_ed25519_key_file is not None:
        selector = ed25519_selector(settings)
        if selector == settings.dkim_selector:
            raise ConfigError(
                "CT_DKIM_ED25519_SELECTOR equals CT_DKIM_SELECTOR: each key needs its own selector"
            )
        key = read_key(settings.dkim_ed25519_key_file, ED25519_VARIABLE, "ed25519")
        keys.append(_signing_key(selector, key))
    return DkimSigner(settings.domain, keys)


def ed25519_selector(settings: Settings) -> str:
    return settings.dkim_ed25519_selector or f"{settings.dkim_selector}-ed25519"


def _signing_key(selector: str, key: PrivateKey) -> SigningKey:
    try:
        return SigningKey(selector, key)
    except WeakKey as exc:
        raise ConfigError(f"{RSA_VARIABLE} holds {exc}; {DKIM_KEY_HINT}") from None


def read_key(path: Path, variable: str, algorithm: Algorithm) -> PrivateKey:
    """A private key of `algorithm` from a PEM file (or, for Ed25519, dknewkey's base64 seed)."""
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    if len(data) > _MAX_KEY_FILE:
        raise ConfigError(f"{variable}: {path} is too large to be a private key")
    key = _parse(data)
    if key is None:
        raise ConfigError(
            f"{variable}: {path} is not an unencrypted PEM private key; {DKIM_KEY_HINT}"
        )
    wanted = rsa.RSAPrivateKey if algorithm == "rsa" else ed25519.Ed25519PrivateKey
    if not isinstance(key, wanted):
        raise ConfigError(
            f"{variable}: {path} holds a {type(key).__name__.removesuffix('PrivateKey')} key, "
            f"not {algorithm}; {DKIM_KEY_HINT}"
        )
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise ConfigError(
            f"{variable} holds a {key.key_size}-bit RSA key: mailbox providers want "
            f"{MIN_RSA_BITS} bits at least; {DKIM_KEY_HINT}"
        )
    return key


def _parse(data: bytes) -> PrivateKey | None:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return key
    if key is not None:
        return None
    try:
        seed = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed) if len(seed) == 32 else None


def generate_key(algorithm: Algorithm, bits: int = MIN_RSA_BITS) -> PrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if bits < MIN_RSA_BITS:
        raise ValueError(f"an RSA DKIM key has {MIN_RSA_BITS} bits at least")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def write_key(key: PrivateKey, path: Path, *, overwrite: bool) -> None:
    """PKCS#8 PEM, readable by its owner only; an existing file is kept unless `overwrite`."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    # Created 0600 rather than chmod-ed afterwards: never readable by others, not even briefly.
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    path.chmod(0o600)
