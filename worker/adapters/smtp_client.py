"""How the SMTP pool reaches its upstream (TLS, AUTH), and which refusals are ours to fix.

A 535, an untrusted certificate or a server without STARTTLS is not the customer's fault and
not transient either: `misconfiguration` names the setting to fix, and the pool raises it as
Rejected instead of an SmtpFailure (which would record DELIVERY_FAILED or retry forever).
"""

from __future__ import annotations

import ssl
from typing import Any

import aiosmtplib
import structlog

from worker.adapters.tls import verify_reason
from worker.core.config import Rejected, Settings

log = structlog.get_logger(__name__)
# RFC 4954: 530 authentication required, 534 mechanism too weak, 535 credentials invalid,
# 538 encryption required for the mechanism.
_AUTH_CODES = {530, 534, 535, 538}


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Certificates and host names verified against CT_SMTP_CA_FILE (or the system's CAs),
    unless CT_SMTP_TLS_VERIFY=false; None when CT_SMTP_TLS=none."""
    if settings.smtp_tls == "none":
        return None
    context = ssl.create_default_context(
        cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    )
    if not settings.smtp_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connection_options(settings: Settings) -> dict[str, Any]:
    """aiosmtplib.SMTP's arguments. `start_tls=True`, not aiosmtplib's default None: None means
    "if offered", a silent fall back to plaintext that CT_SMTP_TLS=starttls must never allow."""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return {
        "hostname": settings.smtp_host,
        "port": settings.smtp_port,
        "timeout": settings.smtp_timeout_s,
        "use_tls": settings.smtp_tls == "tls",
        "start_tls": settings.smtp_tls == "starttls",
        "tls_context": tls_context(settings),
        "username": settings.smtp_username,
        "password": password,
    }


def warn_if_unverified(settings: Settings) -> None:
    if settings.smtp_tls != "none" and not settings.smtp_tls_verify:
        log.warning(
            "smtp_tls_unverified",
            detail="CT_SMTP_TLS_VERIFY=false: the upstream's certificate and host name are not "
            "checked, so anyone on the path can read the mail and the SMTP password",
        )


def misconfiguration(exc: BaseException, settings: Settings) -> Rejected | None:
    """A refusal that only a setting can fix, as one line naming it; None for anything else
    (a recipient's 5xx, a 4xx, a dropped connection: the pool's usual outcomes)."""
    where = f"the SMTP upstream {settings.smtp_host}:{settings.smtp_port} (CT_SMTP_HOST, _PORT)"
    cause = exc.__cause__ if isinstance(exc, aiosmtplib.SMTPConnectError) else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return Rejected(
            f"{where} presents a certificate that is not trusted ({verify_reason(cause)}): set "
            "CT_SMTP_CA_FILE to the CA that signed it (now "
            f"{settings.smtp_ca_file or 'the system CAs'}), or fix CT_SMTP_HOST"
        )
    if isinstance(cause, ssl.SSLError):
        return Rejected(
            f"the TLS handshake with {where} failed ({cause.reason or cause}): CT_SMTP_TLS="
            f"{settings.smtp_tls} does not match the port (465: tls; 587 and 25: starttls)"
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code in _AUTH_CODES:
        return _auth_refused(where, exc, settings)
    if isinstance(exc, aiosmtplib.SMTPException) and "STARTTLS extension not supported" in str(exc):
        return Rejected(
            f"{where} does not offer STARTTLS, and CT_SMTP_TLS=starttls never falls back to "
            "plaintext: fix CT_SMTP_HOST/CT_SMTP_PORT, or use CT_SMTP_TLS=tls for port 465"
        )
    if isinstance(exc, aiosmtplib.SMTPException) and "AUTH extension not supported" in str(exc):
        return Rejected(
            f"{where} does not offer AUTH, and CT_SMTP_USERNAME is set: unset CT_SMTP_USERNAME "
            "and CT_SMTP_PASSWORD, or fix CT_SMTP_HOST/CT_SMTP_PORT"
        )
    return None


def _auth_refused(
    where: str, exc: aiosmtplib.SMTPResponseException, settings: Settings
) -> Rejected:
    reply = f"{exc.code} {exc.message}"
    if "STARTTLS" in exc.message.upper() and settings.smtp_tls == "none":
        return Rejected(f"{where} requires STARTTLS ({reply}): set CT_SMTP_TLS=starttls")
    if settings.smtp_username is None:
        return Rejected(
            f"{where} requires AUTH ({reply}): set CT_SMTP_USERNAME and CT_SMTP_PASSWORD"
        )
    return Rejected(
        f"{where} rejected the credentials of CT_SMTP_USERNAME={settings.smtp_username} "
        f"({reply}): fix CT_SMTP_PASSWORD (or the user name)"
    )


async def probe(settings: Settings) -> None:
    """Connect, STARTTLS or TLS, AUTH as the pool does, then MAIL FROM:<> and RSET (a server
    that wants STARTTLS or AUTH first says so there). Raises Rejected for a refusal that only a
    setting can fix."""
    smtp = aiosmtplib.SMTP(**connection_options(settings))
    try:
        await smtp.connect()
        await smtp.mail("")
        await smtp.rset()
        await smtp.quit()
    except (aiosmtplib.SMTPException, ssl.SSLError) as exc:
        smtp.close()
        raise misconfiguration(exc, settings) or exc from None
