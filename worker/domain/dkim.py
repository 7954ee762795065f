"""DKIM signatures (RFC 6376) on the exact bytes we send: rsa-sha256, ed25519-sha256 (RFC 8463).

dkimpy parses the message, canonicalises it (relaxed/relaxed) and feeds the signed fields to the
hash; the private-key operation is OpenSSL's, through `cryptography`. Why not `dkim.sign()` whole:
dkimpy computes RSA signatures in pure Python (modular exponentiation on Python integers), 5.3 ms
of CPU per message on this machine against 0.2 ms for OpenSSL, and that would make signing the
largest CPU cost of every notification. The tests verify every signature we make with dkimpy's
own verifier and with Perl's Mail::DKIM, against keys published in a real DNS server.

Sign last: any change to a signed field or to the body after signing breaks the signature at the
receiver, so callers sign the final bytes, after every header rewrite.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

MIN_RSA_BITS: Final = 2048
RSA_SHA256: Final = "rsa-sha256"
ED25519_SHA256: Final = "ed25519-sha256"
# Signed whenever present: the fields a reader sees and the MIME structure of the body.
SIGNED_FIELDS: Final = (
    "from", "reply-to", "sender", "to", "cc", "subject", "date", "message-id", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding",
    "content-language", "auto-submitted", "list-id", "list-unsubscribe", "list-unsubscribe-post",
)  # fmt: skip
# Signed once more than they occur (RFC 6376 section 8.15), absent ones included: nobody on the
# way can add a second From or a Reply-To that the signature would not cover.
OVERSIGNED: Final = frozenset(
    {"from", "reply-to", "to", "cc", "subject", "date", "message-id", "mime-version",
     "content-type"}
)  # fmt: skip
_RELAXED: Final = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_LINE_BREAK: Final = re.compile(rb"\r\n|\r|\n")
_FOLD: Final = b"\r\n\t"
_LINE_ROOM: Final = 70

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class WeakKey(ValueError):
    """A key that receivers would reject or that is not fit for signing."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    selector: str
    key: PrivateKey

    def __post_init__(self) -> None:
        if isinstance(self.key, rsa.RSAPrivateKey) and self.key.key_size < MIN_RSA_BITS:
            raise WeakKey(
                f"a {self.key.key_size}-bit RSA key; DKIM needs {MIN_RSA_BITS} bits at least"
            )

    @property
    def algorithm(self) -> str:
        return RSA_SHA256 if isinstance(self.key, rsa.RSAPrivateKey) else ED25519_SHA256

    def sign_digest(self, digest: bytes) -> bytes:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        # RFC 8463 section 3: Ed25519 signs the SHA-256 hash of the signed data, not the data.
        return self.key.sign(digest)

    def dns_record(self) -> str:
        """The TXT value to publish at `<selector>._domainkey.<domain>`."""
        public = self.key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            der = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"


def normalize_line_endings(message: bytes) -> bytes:
    """CRLF everywhere and at the end: the form the message has on the wire (RFC 5321)."""
    lines = _LINE_BREAK.sub(b"\r\n", message)
    return lines if lines.endswith(b"\r\n") else lines + b"\r\n"


class DkimSigner:
    """Signs for one domain with each of its keys (RSA, and optionally Ed25519 too)."""

    def __init__(self, domain: str, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise ValueError("a DKIM signer needs at least one key")
        self.domain = domain.lower().rstrip(".")
        self.keys = tuple(keys)

    def sign(self, message: bytes, *, timestamp: int) -> bytes:
        """The message, line endings normalised, with one DKIM-Signature per key on top."""
        wire = normalize_line_endings(message)
        headers, body = dkim.rfc822_parse(wire)
        canonical = _RELAXED.canonicalize_headers(headers)
        body_hash = base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())
        signed = _signed_names(name.lower() for name, _ in headers)
        signatures = [
            self._signature(key, canonical, signed, body_hash, timestamp) for key in self.keys
        ]
        return b"".join(signatures) + wire

    def _signature(
        self,
        key: SigningKey,
        canonical: list[tuple[bytes, bytes]],
        signed: list[bytes],
        body_hash: bytes,
        timestamp: int,
    ) -> bytes:
        fold = _FOLD.decode()
        unsigned = (
            f"v=1; a={key.algorithm}; c=relaxed/relaxed;{fold}d={self.domain}; "
            f"s={key.selector}; t={timestamp};{fold}h="
        ).encode("ascii")
        unsigned += _wrap(signed, b":", first=len(b"\th=")) + b";"
        unsigned += _FOLD + b"bh=" + body_hash + b";" + _FOLD + b"b="
        hasher = hashlib.sha256()
        # The signature field itself is hashed last, with an empty b= (RFC 6376 section 3.7).
        field = (b"DKIM-Signature", b" " + unsigned)
        dkim.hash_headers(hasher, _RELAXED, canonical, signed, field, None)
        value = base64.b64encode(key.sign_digest(hasher.digest()))
        chunks = [value[i : i + _LINE_ROOM] for i in range(0, len(value), _LINE_ROOM)]
        return b"DKIM-Signature: " + unsigned + _FOLD.join(chunks) + b"\r\n"


def _signed_names(present: Iterable[bytes]) -> list[bytes]:
    """The h= list: every present field of SIGNED_FIELDS, the oversigned ones once more."""
    counts: dict[str, int] = {}
    for name in present:
        text = name.decode("ascii", "replace")
        counts[text] = counts.get(text, 0) + 1
    names: list[bytes] = []
    for field in SIGNED_FIELDS:
        times = counts.get(field, 0) + (1 if field in OVERSIGNED else 0)
        names += [field.encode("ascii")] * times
    return names


def _wrap(items: Sequence[bytes], separator: bytes, *, first: int) -> bytes:
    """Join `items`, folding before an item that would run a line past the room left."""
    out, column = b"", first
    for index, item in enumerate(items):
        piece = item if index == 0 else separator + item
        if index and column + len(piece) > _LINE_ROOM:
            out += separator + _FOLD + item
            column = 1 + len(item)
        else:
            out += piece
            column += len(piece)
    return out
