"""The pooled SMTP client against a capture server over real sockets."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Capture
from worker.adapters.smtp import SmtpFailure, SmtpPool

SENDER = "store@ct.example.com"
RECIPIENT = "customer@example.org"


def _message(n: int) -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: message {n}\r\n"
        f"Message-ID: <m{n}@ct.example.com>\r\n\r\nbody {n}\r\n"
    ).encode()


@pytest.mark.parametrize("max_unrecorded", [1, 4])
async def test_at_most_max_unrecorded_messages_are_accepted_and_not_yet_recorded(
    capture: Capture, max_unrecorded: int
) -> None:
    """The bound behind "at most one duplicate email per kill": a kill at any moment finds at
    most `max_unrecorded` (default 1) messages the upstream accepted but not yet recorded."""
    pool = SmtpPool("127.0.0.1", capture.port, size=8, timeout=10, max_unrecorded=max_unrecorded)
    recorded = 0
    unrecorded_at_worst = 0

    async def record() -> int:
        nonlocal recorded, unrecorded_at_worst
        await asyncio.sleep(0.01)  # a slow ledger write: other sends must not overtake it
        unrecorded_at_worst = max(unrecorded_at_worst, capture.handler.accepted - recorded)
        recorded += 1
        return recorded

    try:
        results = await asyncio.gather(
            *(
                pool.send_then(_message(n), sender=SENDER, recipient=RECIPIENT, then=record)
                for n in range(24)
            )
        )
    finally:
        await pool.close()
    assert sorted(results) == list(range(1, 25))
    assert capture.handler.accepted == recorded == 24
    # Reached, not just respected: eight connections keep more sends than that waiting.
    assert unrecorded_at_worst == max_unrecorded


async def test_a_refused_send_records_nothing_and_leaves_the_pool_usable(
    capture: Capture,
) -> None:
    pool = SmtpPool("127.0.0.1", capture.port, size=2, timeout=10)
    calls: list[str] = []

    async def record() -> None:
        calls.append("recorded")

    try:
        capture.refuse("550 5.1.1 No such user")
        with pytest.raises(SmtpFailure) as refused:
            await pool.send_then(_message(1), sender=SENDER, recipient=RECIPIENT, then=record)
        assert refused.value.permanent and refused.value.code == 550
        assert calls == []
        capture.accept()
        await pool.send_then(_message(2), sender=SENDER, recipient=RECIPIENT, then=record)
    finally:
        await pool.close()
    assert calls == ["recorded"]
    assert [m["headers"]["Subject"] for m in capture.messages()] == ["message 2"]
