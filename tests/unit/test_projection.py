"""Merging timeline events into an order's projection: a function of the set of entries only."""

from __future__ import annotations

import random

from tests.support.events import T0, timeline_event
from worker.contracts.events import OrderStatus, TimelineEvent, TimelineKind
from worker.domain.projection import entry_of, merge


def test_new_events_are_merged_in_time_order_whatever_their_arrival_order() -> None:
    events = [timeline_event("o-1", minutes=m) for m in (3, 1, 2)]
    projection = merge([], events)
    assert projection is not None
    assert [e["occurredAt"] for e in projection.timeline] == sorted(e.occurred_at for e in events)
    assert projection.fields()["entryCount"] == 3


def test_a_replay_or_a_duplicate_changes_nothing() -> None:
    events = [timeline_event("o-1", minutes=m) for m in range(3)]
    first = merge([], events)
    assert first is not None
    assert merge(first.timeline, events) is None
    assert merge(first.timeline, [events[1], events[1]]) is None


def test_the_same_event_twice_in_one_batch_is_one_entry() -> None:
    event = timeline_event("o-1")
    projection = merge([], [event, event])
    assert projection is not None
    assert [e["eventId"] for e in projection.timeline] == [event.event_id]


def test_the_document_is_the_same_for_any_arrival_order_and_batching() -> None:
    events = [timeline_event("o-1", minutes=m % 4) for m in range(12)]  # equal times too
    reference = merge([], events)
    assert reference is not None
    for seed in range(5):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        half = merge([], shuffled[:5])
        assert half is not None
        rest = merge(half.timeline, shuffled[5:])
        assert rest is not None
        assert rest.fields() == reference.fields()


def test_status_is_the_latest_status_change_and_updated_at_the_latest_entry() -> None:
    shipped = timeline_event("o-1", minutes=5, status=OrderStatus.SHIPPED)
    handling = timeline_event("o-1", minutes=1, status=OrderStatus.HANDLING)
    sent = timeline_event("o-1", minutes=9, kind=TimelineKind.NOTIFICATION_SENT)
    projection = merge([], [shipped, sent, handling])
    assert projection is not None
    assert projection.status == "SHIPPED"
    assert projection.status_at == shipped.occurred_at
    assert projection.updated_at == sent.occurred_at
    assert projection.store_id == "store-1"


def test_an_order_without_status_changes_has_no_status() -> None:
    projection = merge([], [timeline_event("o-1", kind=TimelineKind.MESSAGE_FORWARDED)])
    assert projection is not None
    assert (projection.status, projection.status_at) == (None, None)
    assert projection.updated_at == T0


def test_existing_entries_are_kept_as_they_are() -> None:
    old = entry_of(timeline_event("o-1", minutes=0))
    projection = merge([old], [timeline_event("o-1", minutes=1)])
    assert projection is not None
    assert projection.timeline[0] is old


_LAST_LISTED = timeline_event(
    "o-1", minutes=2, kind=TimelineKind.MESSAGE_REJECTED, event_id="rejected-5"
)
_FIRST = timeline_event("o-1", minutes=1, kind=TimelineKind.MESSAGE_REJECTED, event_id="first")


def _rejected(folded: int | None) -> TimelineEvent:
    """The relay's last listed refusal, again with its count so far (the same bytes)."""
    return _LAST_LISTED.model_copy(update={"folded_refusals": folded})


def test_a_folded_count_updates_its_entry_and_the_largest_count_stays() -> None:
    listed = merge([], [_FIRST, _rejected(None)])
    assert listed is not None
    counted = merge(listed.timeline, [_rejected(3)])
    assert counted is not None
    assert len(counted.timeline) == 2
    assert counted.timeline[-1]["foldedRefusals"] == 3
    assert counted.timeline[0] is listed.timeline[0]
    # An older count arriving late, a repeat, or the entry again without a count: nothing new.
    for late in (_rejected(2), _rejected(3), _rejected(None)):
        assert merge(counted.timeline, [late]) is None


def test_folded_counts_give_the_same_document_whatever_their_order_and_batching() -> None:
    events = [_FIRST, *(_rejected(n) for n in (None, 1, 2, 3, 4))]
    reference = merge([], events)
    assert reference is not None
    assert reference.timeline[-1]["foldedRefusals"] == 4
    for seed in range(5):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        half = merge([], shuffled[:3])
        assert half is not None
        rest = merge(half.timeline, shuffled[3:])
        final = rest.fields() if rest is not None else half.fields()
        assert final == reference.fields()
