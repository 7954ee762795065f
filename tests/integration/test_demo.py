"""`ct demo`, the README's first command, run as a newcomer runs it: the real CLI on the stack."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess

import pytest

from tests.conftest import REPO
from worker.adapters import mongo
from worker.core.config import Settings
from worker.devtools.demo_bounce import BOUNCED_CUSTOMER
from worker.devtools.demo_setup import CARRIER, CUSTOMERS, JOURNEY, STORES, state_dir

pytestmark = pytest.mark.stack
ORDERS_PER_STORE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_demo_tells_the_whole_story_and_logs_no_real_address(
    settings: Settings, db: mongo.Database
) -> None:
    worker_log = state_dir() / "run" / "demo-workers.log"
    log_start = worker_log.stat().st_size if worker_log.exists() else 0
    env = {
        **os.environ,
        "CT_MONGO_DB": settings.mongo_db,
        "CT_TOPIC_ORDER_STATUS": settings.topic_order_status,
        "CT_TOPIC_TIMELINE": settings.topic_timeline,
        "CT_TOPIC_DLQ": settings.topic_dlq,
        "CT_GROUP_NOTIFIER": settings.group_notifier,
        "CT_GROUP_PROJECTOR": settings.group_projector,
        "CT_RELAY_PORT": str(_free_port()),
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [str(REPO / ".venv/bin/ct"), "demo", "--orders", str(ORDERS_PER_STORE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]

    for status in JOURNEY:
        assert f"{status.value:<16} emitted for 4 orders: 4 emails captured" in out
    assert "workers stopped on SIGTERM (exit 0)" in out
    captured = re.search(r"Emails captured by the SMTP sink \((\d+)\)", out)
    # Five notifications per order, plus the carrier's notice and the customer's reply, twice,
    # plus the one email to the customer whose mailbox does not exist.
    assert captured and int(captured.group(1)) == 2 * ORDERS_PER_STORE * len(JOURNEY) + 4 + 1
    entries = [int(n) for n in re.findall(r"Order \S+: (\d+) timeline entries", out)]
    # Each status is a STATUS_CHANGED and a NOTIFICATION_SENT; two orders also hold the
    # carrier's message and the customer's reply. The bounced customer's order: its first email,
    # the bounce, and the next status's email not sent. The first order also shows the forged
    # carrier refused (sender authentication enforced, the stack's DNS).
    assert sorted(entries) == [5, 10, 10, 12, 13]
    assert "forger at 127.0.0.3 as tracking@speedy-carrier.example: 550 5.7.1" in out
    assert out.count("MESSAGE_REJECTED") == 1
    assert "DELIVERY_FAILED" in out and "hard bounce 5.1.1" in out
    assert "suppressed 5.1.1: not sent" in out
    timelines = out[out.index("\nOrder ") :]  # the captured mail above shows envelopes, by design
    assert "no-such-mailbox" not in timelines and "lucas.lima" not in timelines
    assert out.count("MESSAGE_FORWARDED") == 4
    soft_store = next(s for s in STORES if s[3].value == "soft")
    assert f"{soft_store[2]}-" in out  # the soft store's alias reads as its address
    assert "Where to look next" in out
    assert out.rstrip().splitlines()[-2].startswith("Open the console")
    assert "make console" in out.rstrip().splitlines()[-1]

    with worker_log.open("rb") as log:
        log.seek(log_start)
        logged = log.read().decode("utf-8", "replace")
    assert "event_processed" in logged and "message_relayed" in logged
    # Customers write as local+RUN-N@domain; a soft alias starts with the real address and a
    # "-", which is why an address followed by "-" is not a leak.
    customers = [
        rf"{re.escape(c[2].split('@')[0])}\+\w+-\d+@{re.escape(c[2].split('@')[1])}"
        for c in CUSTOMERS
    ]
    others = [
        re.escape(address) for address in [s[2] for s in STORES] + [CARRIER[1], BOUNCED_CUSTOMER[2]]
    ]
    leaks = [m.group(0) for p in customers + others for m in re.finditer(rf"{p}(?!-)", logged)]
    assert leaks == []
