"""The fault tests' judges, on made-up evidence: a judge that cannot fail tests nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.faults.evidence import SinkTail, attribute_duplicates, order_events, out_of_order
from tests.faults.procs import Run
from worker.domain.compose import message_id_for

DOMAIN = "ct.example.com"


def _sink(tmp_path: Path, copies: dict[str, list[float]]) -> SinkTail:
    sink = SinkTail(tmp_path)
    sink.received = {message_id_for(event_id, DOMAIN): at for event_id, at in copies.items()}
    return sink


def _run(tmp_path: Path, name: str, started: float, ended: float | None, *logged: str) -> Run:
    log = tmp_path / f"{name}.log"
    lines = [{"event": "event_processed", "event_id": e} for e in logged]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return Run(log, started, ended, abrupt=ended is not None)


def test_emails_accepted_in_event_order_pass_and_a_swapped_pair_is_named(tmp_path: Path) -> None:
    events = order_events("u", orders=2, per_order=3)
    in_order = {e.event_id: [float(k)] for k, e in enumerate(events)}
    assert out_of_order(events, _sink(tmp_path, in_order), DOMAIN) == []

    swapped = dict(in_order)
    first, second = events[3].event_id, events[4].event_id  # the second order's first two
    swapped[first], swapped[second] = in_order[second], in_order[first]
    assert out_of_order(events, _sink(tmp_path, swapped), DOMAIN) == [events[3].order_id]


def test_a_resent_copy_after_the_next_email_does_not_count_as_disorder(tmp_path: Path) -> None:
    """Only the first copy of each email orders it: a duplicate is judged apart."""
    events = order_events("u", orders=1, per_order=2)
    copies = {events[0].event_id: [1.0, 5.0], events[1].event_id: [2.0]}
    assert out_of_order(events, _sink(tmp_path, copies), DOMAIN) == []


def test_each_extra_copy_goes_to_a_different_killed_replica_when_two_overlap(
    tmp_path: Path,
) -> None:
    """Two replicas killed while both ran, one duplicate each: explained, one per process."""
    events = order_events("u", orders=2, per_order=1)
    a, b = events[0].event_id, events[1].event_id
    sink = _sink(tmp_path, {a: [10.0, 30.0], b: [11.0, 31.0]})
    runs = [
        _run(tmp_path, "n1", 0.0, 12.0),
        _run(tmp_path, "n2", 0.0, 12.0),
        _run(tmp_path, "n3", 20.0, None, a, b),
    ]
    blame = attribute_duplicates(events, sink, DOMAIN, runs)
    assert blame.unexplained == []
    assert blame.per_abrupt_exit == [1, 1]


def test_two_duplicates_from_one_killed_process_are_reported_as_two(tmp_path: Path) -> None:
    events = order_events("u", orders=2, per_order=1)
    a, b = events[0].event_id, events[1].event_id
    sink = _sink(tmp_path, {a: [10.0, 30.0], b: [11.0, 31.0]})
    runs = [_run(tmp_path, "n1", 0.0, 12.0), _run(tmp_path, "n2", 20.0, None, a, b)]
    assert attribute_duplicates(events, sink, DOMAIN, runs).per_abrupt_exit == [2]


def test_a_copy_sent_by_a_process_that_recorded_it_is_unexplained(tmp_path: Path) -> None:
    """A process that logged the event as processed recorded it: its copy was no kill's."""
    events = order_events("u", orders=1, per_order=1)
    a = events[0].event_id
    sink = _sink(tmp_path, {a: [10.0, 30.0]})
    runs = [_run(tmp_path, "n1", 0.0, 12.0, a), _run(tmp_path, "n2", 20.0, None, a)]
    assert attribute_duplicates(events, sink, DOMAIN, runs).unexplained == [a]
