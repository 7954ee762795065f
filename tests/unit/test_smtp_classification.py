"""What an SMTP upstream's answer means for a message: give up (5xx) or try again (all else)."""

from __future__ import annotations

import aiosmtplib
import pytest

from worker.adapters.smtp import SmtpFailure, classify_failure, is_transient


@pytest.mark.parametrize(
    ("error", "code", "permanent"),
    [
        (aiosmtplib.SMTPResponseException(550, "5.1.1 No such user"), 550, True),
        (aiosmtplib.SMTPDataError(554, "5.6.0 Rejected"), 554, True),
        (aiosmtplib.SMTPResponseException(451, "4.3.0 Try later"), 451, False),
        (aiosmtplib.SMTPResponseException(421, "4.4.2 Closing"), 421, False),
        (aiosmtplib.SMTPServerDisconnected("gone"), 421, False),
        (aiosmtplib.SMTPConnectError("refused"), 421, False),
        (aiosmtplib.SMTPTimeoutError("slow"), 421, False),
        (ConnectionResetError("reset"), 421, False),
    ],
)
def test_replies_and_errors_are_classified(error: Exception, code: int, permanent: bool) -> None:
    failure = classify_failure(error)
    assert (failure.code, failure.permanent) == (code, permanent)
    assert is_transient(failure) is not permanent


def test_all_recipients_refused_is_permanent_only_if_no_refusal_was_temporary() -> None:
    hard = aiosmtplib.SMTPRecipientRefused(550, "5.1.1 No such user", "a@x.test")
    soft = aiosmtplib.SMTPRecipientRefused(452, "4.2.2 Mailbox full", "b@x.test")
    assert classify_failure(aiosmtplib.SMTPRecipientsRefused([hard])).permanent
    mixed = classify_failure(aiosmtplib.SMTPRecipientsRefused([hard, soft]))
    assert (mixed.code, mixed.permanent) == (452, False)


def test_a_failure_carries_the_reply_for_the_timeline() -> None:
    failure = SmtpFailure(550, "5.1.1 No such user", permanent=True)
    assert failure.reply == "550 5.1.1 No such user"
    assert not is_transient(ValueError("not an SMTP failure"))
