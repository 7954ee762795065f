"""Each stage's own CPU work on one core, without I/O: what a process could do if it only computed.

notifier   decode the OMS event, render, compose + serialise the email, DKIM-sign it (rsa-sha256,
           2048 bits, as deployed) and give it its VERP return path, build, seal (the customer's
           subject key, from the workers' cache) and encode its two timeline events and the
           ledger record
projector  decode the timeline events of a batch, group by order, merge into the known timeline
relay      read From, decide the route, rewrite + serialise the forward, summarise it, sign it and
           give it its return path, build, seal and encode MESSAGE_FORWARDED (sender
           authentication is DNS-bound and is measured by the relay stages, with and without it)

The `_unsealed` rates leave the sealing out, so one run shows its cost per event.

Each is timed over pre-built inputs (so building them is not counted), as events per second.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.workload import CODEC, lifecycle_events, timeline_lifecycle
from worker.adapters.dkim_keys import generate_key as generate_dkim_key
from worker.contracts.events import OrderStatusChanged, ParticipantRole, TimelineEvent
from worker.core.crypto import SubjectKey
from worker.domain import notifications, relay_events
from worker.domain.dkim import DkimSigner, SigningKey
from worker.domain.headers import read_header
from worker.domain.personal import seal_event
from worker.domain.projection import Entry, merge
from worker.domain.rewrite import rewrite_for_forward
from worker.domain.routing import AliasView, OrderParties, Route, decide_route
from worker.domain.summary import summarize
from worker.domain.templates import TemplateRenderer
from worker.domain.verp import BounceAddresses

BATCH = 500


def _rate(count: int, started: float) -> int:
    return round(count / (time.perf_counter() - started))


class _Seal:
    """What `Outbound.seal` computes (worker/services/outbound.py): a signature, a VERP address."""

    def __init__(self, domain: str) -> None:
        self.signer = DkimSigner(domain, [SigningKey("bench", generate_dkim_key("rsa"))])
        self.addresses = BounceAddresses([secrets.token_bytes(64)], domain)
        self.expires_at = datetime.now(UTC) + timedelta(days=60)

    def __call__(self, raw: bytes, event_id: str) -> tuple[bytes, str]:
        signed = self.signer.sign(raw, timestamp=int(time.time()))
        return signed, self.addresses.address(event_id, self.expires_at)


def _subject_key() -> Callable[[TimelineEvent], TimelineEvent]:
    """What `Subjects.seal` computes once the key is cached: the fields sealed under it."""
    key = SubjectKey("bench-subject", SubjectKey.new_key())
    return lambda event: seal_event(event, key)


def _unsealed(event: TimelineEvent) -> TimelineEvent:
    return event


def notifier(n: int, domain: str, *, sealed: bool = True) -> int:
    seal_fields = _subject_key() if sealed else _unsealed
    events = lifecycle_events(n, "cpu")
    values = [CODEC.encode(e) for e in events]
    renderer = TemplateRenderer(None)
    seal = _Seal(domain)
    at = datetime.now(UTC)
    started = time.perf_counter()
    for k, value in enumerate(values):
        event = CODEC.decode(value, OrderStatusChanged)
        prepared = notifications.prepare(
            event,
            renderer.render(event),
            store_alias=f"{k:032d}@{domain}",
            customer_alias=f"{k + 1:032d}@{domain}",
            domain=domain,
        )
        seal_fields(prepared.outcome(at=at))  # what the message store keeps for a bounce
        seal(prepared.raw, event.event_id)
        timeline = [seal_fields(e) for e in prepared.timeline(at=at, failure=None)]
        _ledger = [e.to_record() for e in timeline]
        _encoded = [CODEC.encode(e) for e in timeline]
    return _rate(len(values), started)


def projector(n: int, *, sealed: bool = True) -> int:
    """Sealed events are longer (base64 ciphertext): decoding and merging them costs more."""
    seal_fields = _subject_key() if sealed else _unsealed
    values = [CODEC.encode(seal_fields(e)) for e in timeline_lifecycle(n, "cpu")]
    timelines: dict[str, list[Entry]] = {}
    started = time.perf_counter()
    for start in range(0, len(values), BATCH):
        by_order: dict[str, list[TimelineEvent]] = defaultdict(list)
        for value in values[start : start + BATCH]:
            event = CODEC.decode(value, TimelineEvent)
            by_order[event.order_id].append(event)
        for order_id, incoming in by_order.items():
            projection = merge(timelines.get(order_id, []), incoming)
            if projection is not None:
                timelines[order_id] = projection.timeline
                _fields = projection.fields()
    return _rate(len(values), started)


def _view(address: str, role: ParticipantRole, real: str, name: str) -> AliasView:
    return AliasView(address, role, "o-cpu", "store-1", real, name, expired=False)


def relay(mails: list[tuple[str, str, bytes]], domain: str, *, sealed: bool = True) -> int:
    """`mails`: (store's real address, customer alias, raw message), as the relay stage sends."""
    seal_fields = _subject_key() if sealed else _unsealed
    inputs: list[tuple[str, bytes, AliasView, OrderParties]] = []
    for k, (real_store, alias, raw) in enumerate(mails):
        customer = _view(alias, ParticipantRole.CUSTOMER, f"c{k}@example.org", "Jane Roe")
        store = _view(f"{k:032d}@{domain}", ParticipantRole.STORE, real_store, "Shop Example")
        inputs.append((real_store, raw, customer, OrderParties(customer, store)))
    seal = _Seal(domain)
    at = datetime.now(UTC)
    started = time.perf_counter()
    for mail_from, raw, recipient, parties in inputs:
        header_from = read_header(raw, "From")
        route = decide_route(recipient, parties, mail_from, header_from, None, domain=domain)
        assert isinstance(route, Route)
        forwarded = rewrite_for_forward(raw, route, parties, domain=domain)
        summary = summarize(forwarded)
        event = seal_fields(relay_events.forwarded(route, summary, forwarded, at=at))
        seal(forwarded, event.event_id)
        CODEC.encode(event)
    return _rate(len(inputs), started)


def all_stages(n: int, domain: str, relay_mails: list[tuple[str, str, bytes]]) -> dict[str, Any]:
    return {
        "notifier_per_s": notifier(min(n, 3_000), domain),
        "notifier_unsealed_per_s": notifier(min(n, 3_000), domain, sealed=False),
        "projector_per_s": projector(min(n, 20_000)),
        "projector_unsealed_per_s": projector(min(n, 20_000), sealed=False),
        "relay_per_s": relay(relay_mails[:2_000], domain),
        "relay_unsealed_per_s": relay(relay_mails[:2_000], domain, sealed=False),
    }
