"""The pooled SMTP client, and the notifier's recorded sends, against a capture server over real
sockets."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Capture
from tests.memory.stores import MemoryLedger
from tests.support.smtp import plain_pool
from worker.adapters.smtp import SmtpFailure
from worker.services.recorded_send import RecordedSender

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
    pool = plain_pool(capture.port, size=8, timeout=10)
    sender = RecordedSender(pool, MemoryLedger(), max_unrecorded=max_unrecorded)
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
                sender.send(_message(n), sender=SENDER, recipient=RECIPIENT, record=record)
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
    pool = plain_pool(capture.port, size=2, timeout=10)
    sender = RecordedSender(pool, MemoryLedger())
    calls: list[str] = []

    async def record() -> None:
        calls.append("recorded")

    try:
        capture.refuse("550 5.1.1 No such user")
        with pytest.raises(SmtpFailure) as refused:
            await sender.send(_message(1), sender=SENDER, recipient=RECIPIENT, record=record)
        assert refused.value.permanent and refused.value.code == 550
        assert calls == []
        capture.accept()
        await sender.send(_message(2), sender=SENDER, recipient=RECIPIENT, record=record)
    finally:
        await pool.close()
    assert calls == ["recorded"]
    assert [m["headers"]["Subject"] for m in capture.messages()] == ["message 2"]


async def test_a_prepared_message_arrives_byte_for_byte_lines_starting_with_a_dot_too(
    capture: Capture,
) -> None:
    """The aiosmtplib seam (the body written through `SMTP.protocol`, then the end of DATA): what
    the upstream receives is exactly the message, dot-stuffing undone, and the reply is its 250.
    A newer aiosmtplib that changes the seam fails here, not in production."""
    pool = plain_pool(capture.port, size=1, timeout=10)
    raw = _message(1).replace(b"body 1\r\n", b".hidden\r\n..two\r\n.\r\nend")
    try:
        async with pool.prepare(raw, sender=SENDER, recipient=RECIPIENT) as prepared:
            assert capture.handler.accepted == 0  # everything but the end: not accepted yet
            reply = await prepared.finish()
    finally:
        await pool.close()
    assert reply.startswith("2.0.0 Message captured")
    [entry] = capture.messages()
    assert capture.raw(entry) == raw + b"\r\n"
    assert (entry["mailFrom"], entry["rcptTos"]) == (SENDER, [RECIPIENT])


async def test_a_prepared_message_left_unfinished_is_never_delivered(capture: Capture) -> None:
    pool = plain_pool(capture.port, size=1, timeout=10)
    try:
        with pytest.raises(RuntimeError, match="changed our mind"):
            async with pool.prepare(_message(1), sender=SENDER, recipient=RECIPIENT):
                raise RuntimeError("changed our mind")
        async with pool.prepare(_message(2), sender=SENDER, recipient=RECIPIENT) as prepared:
            await prepared.finish()  # the same (only) connection, reopened clean
    finally:
        await pool.close()
    assert [m["headers"]["Subject"] for m in capture.messages()] == ["message 2"]


async def test_a_send_cancelled_while_waiting_for_its_turn_is_dropped_not_sent_later(
    capture: Capture,
) -> None:
    """The cancelled send's connection is mid-DATA; it must not carry the next message."""
    pool = plain_pool(capture.port, size=2, timeout=3)
    sender = RecordedSender(pool, MemoryLedger())
    release = asyncio.Event()

    async def slow_record() -> None:
        await release.wait()

    async def record() -> None:
        pass

    try:
        first = asyncio.ensure_future(
            sender.send(_message(1), sender=SENDER, recipient=RECIPIENT, record=slow_record)
        )
        while capture.handler.accepted < 1:
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(
            sender.send(_message(2), sender=SENDER, recipient=RECIPIENT, record=record)
        )
        await asyncio.sleep(0.2)  # message 2 is now waiting for its turn, mid-DATA
        waiting.cancel()
        release.set()
        await first
        await asyncio.gather(  # both connections in use, the cancelled send's one too
            *(
                sender.send(_message(n), sender=SENDER, recipient=RECIPIENT, record=record)
                for n in (3, 4)
            )
        )
    finally:
        await pool.close()
    subjects = [m["headers"]["Subject"] for m in capture.messages()]
    assert sorted(subjects) == ["message 1", "message 3", "message 4"]


async def test_a_send_cancelled_in_its_turn_still_records_what_the_upstream_accepted(
    capture: Capture,
) -> None:
    """A graceful stop whose grace runs out cancels the notifier's batch. A send cancelled while
    the upstream accepts its message (its turn) records it before the cancellation goes on, so
    only a kill, never a stop, can send an email twice."""
    pool = plain_pool(capture.port, size=1, timeout=10)
    sender = RecordedSender(pool, MemoryLedger())
    in_turn = asyncio.Event()
    recorded: list[str] = []

    async def record() -> None:
        in_turn.set()
        await asyncio.sleep(0.3)  # the ledger write still under way when the cancel comes
        recorded.append("recorded")

    send = asyncio.ensure_future(
        sender.send(_message(1), sender=SENDER, recipient=RECIPIENT, record=record)
    )
    try:
        await asyncio.wait_for(in_turn.wait(), 10)
        send.cancel()
        with pytest.raises(asyncio.CancelledError):
            await send
    finally:
        await pool.close()
    assert capture.handler.accepted == 1
    assert recorded == ["recorded"]
