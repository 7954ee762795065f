"""Timelines stay bounded (issue 19): past a few MESSAGE_REJECTED per order and hour, the rest of
the refusals are counted on the last entry listed. Against the real relay, Kafka and FerretDB,
through the projector and `ct timeline`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from tests.conftest import REPO, Capture
from tests.helpers import CODEC, running
from tests.integration.test_relay import Relay, _mail
from tests.integration.test_relay import relay as relay  # noqa: PLC0414 - the fixture, shared
from tests.integration.test_relay import sender_dns as sender_dns  # noqa: PLC0414
from tests.integration.test_relay_auth import _relay_with
from tests.support.polling import eventually
from tests.support.timelines import timeline_when
from worker.adapters import mongo
from worker.apps.projector import ProjectorService
from worker.contracts.events import TimelineEvent, TimelineKind
from worker.domain.relay_events import REJECTIONS_LISTED_PER_ORDER

pytestmark = pytest.mark.stack
# Rate limits off: every refusal reaches the budget (they are a test of their own).
UNLIMITED = {"relay_rate_per_alias": 0, "relay_rate_per_ip": 0, "relay_rate_per_domain": 0}


async def _refuse(relay: Relay, senders: range) -> None:
    """Marketing from a distinct stranger each: refused, and each a refusal of its own."""
    alias = relay.order.customer_alias
    for i in senders:
        sender = f"seller{i}@elsewhere.example"
        mail = _mail(sender, alias, f"Big sale {i}", List_Unsubscribe="<https://x.example/u>")
        code, _ = await relay.send(mail, sender=sender, to=alias)
        assert code == 550


def _rejections(entries: list[TimelineEvent]) -> list[TimelineEvent]:
    return [e for e in entries if e.kind is TimelineKind.MESSAGE_REJECTED]


async def test_refusals_past_the_budget_are_counted_on_the_last_entry_and_shown(
    relay: Relay, capture: Capture, db: mongo.Database
) -> None:
    listed, extra = REJECTIONS_LISTED_PER_ORDER, 4
    async with _relay_with(relay, **UNLIMITED) as unlimited:
        await _refuse(unlimited, range(listed + extra))
        await _refuse(unlimited, range(listed, listed + 2))  # the same refusals again
    async with running(ProjectorService(relay.settings, CODEC)):
        entries = await eventually(
            timeline_when(
                db,
                relay.order.id,
                lambda es: any(e.folded_refusals == extra for e in _rejections(es)),
                relay.settings,
            ),
            what="the count on the last entry",
        )
    rejected = _rejections(entries)
    assert len(rejected) == listed
    assert [e.folded_refusals for e in rejected] == [None] * (listed - 1) + [extra]
    assert capture.messages() == []
    assert relay.settings.encryption_key is not None
    env = {
        **os.environ, "CT_MONGO_DB": relay.settings.mongo_db,
        "CT_ENCRYPTION_KEY": relay.settings.encryption_key.get_secret_value(),
    }  # fmt: skip
    shown = await asyncio.to_thread(
        subprocess.run, [str(REPO / ".venv/bin/ct"), "timeline", relay.order.id],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    assert shown.stdout.count("MESSAGE_REJECTED") == listed
    assert shown.stdout.count(f"(+{extra} more refused)") == 1, shown.stdout


async def test_two_relay_processes_each_count_on_their_own_last_entry_and_nothing_is_lost(
    relay: Relay, db: mongo.Database
) -> None:
    """Each replica keeps its own budget: the timeline lists a few per replica, and the counts
    on their last entries plus the entries listed are every refusal."""
    listed = REJECTIONS_LISTED_PER_ORDER
    async with _relay_with(relay, **UNLIMITED) as one, _relay_with(relay, **UNLIMITED) as two:
        await asyncio.gather(
            _refuse(one, range(listed + 3)), _refuse(two, range(100, 100 + listed + 2))
        )
    async with running(ProjectorService(relay.settings, CODEC)):
        entries = await eventually(
            timeline_when(
                db,
                relay.order.id,
                lambda es: sum(e.folded_refusals or 0 for e in _rejections(es)) == 5,
                relay.settings,
            ),
            what="both replicas' counts",
        )
    rejected = _rejections(entries)
    assert len(rejected) == 2 * listed
    assert sorted(e.folded_refusals or 0 for e in rejected)[-2:] == [2, 3]
    assert len(rejected) + sum(e.folded_refusals or 0 for e in rejected) == 2 * listed + 5
