"""What the adapters say about a TLS failure, whatever the server behind it."""

from __future__ import annotations

import ssl


def verify_reason(exc: ssl.SSLCertVerificationError) -> str:
    """OpenSSL's reason ("unable to get local issuer certificate", "Hostname mismatch...")."""
    return str(getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc)
