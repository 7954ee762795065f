"""The bench's verdicts and scale-out summary, on made-up results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import db_ops, report
from bench.scaling import summarise
from bench.upstreams import PostfixSink


def _results(**stages: Any) -> dict[str, Any]:
    return {
        "meta": {"run_id": "t", "git": "x", "stack": "private", "cpus": 2, "events": 10},
        "ceilings": {"smtp_send smtp-sink": {"rate": 5000}},
        "diagnostics": {"projector_writes": {"rate": 1000}},
        "stages": stages,
        "memory": {"growth_pct": 3.0},
    }


def _row(results: dict[str, Any], stage: str) -> dict[str, Any]:
    return next(r for r in report.verdicts(results) if r["stage"] == stage)


def test_rate_targets_are_absolute_and_the_projectors_is_a_share_of_its_raw_writes() -> None:
    results = _results(
        notifier={"rate": 499.0},
        relay={"rate": 600.0, "ceiling": {"rate": 7000}},
        projector={"rate": 700.0},
    )
    assert _row(results, "notifier")["met"] is False
    assert _row(results, "relay")["met"] is True
    projector = _row(results, "projector")
    assert (projector["ratio"], projector["met"]) == (0.7, True)
    assert _row(results, "notifier RSS growth %")["met"] is True


def test_a_stage_that_failed_misses_its_target_and_the_table_names_its_error() -> None:
    results = _results(notifier={"error": "BenchError: boom"})
    results["verdicts"] = report.verdicts(results)
    assert _row(results, "notifier")["met"] is False
    assert "notifier: ERROR BenchError: boom" in report.table(results)


def test_scale_out_efficiency_and_the_gain_of_each_added_replica() -> None:
    results = _results()
    results["meta"]["brokers"] = 3
    results["scale_out"] = {
        "notifier_x1": {"rate": 100.0, "completed": 1000, "worker_cpu_s": 2.0},
        "notifier_x2": {"rate": 150.0, "completed": 1000, "worker_cpu_s": 2.5},
        "notifier_x3": {"rate": 180.0, "completed": 1000, "worker_cpu_s": 3.0},
    }
    results["resources"] = {"notifier_x1": {"cpu_s": {"kafka": 1.0, "ferretdb": 0.0}}}
    rows = summarise(results)["notifier"]
    assert [r["efficiency"] for r in rows] == [1.0, 0.75, 0.6]
    assert [r["added_replica_gain"] for r in rows] == [None, 0.5, 0.3]
    assert rows[0]["cpu_ms_per_event"] == {"workers": 2.0, "kafka": 1.0}


def test_smtp_sinks_counter_line_is_read_from_its_last_update(tmp_path: Path) -> None:
    counters = tmp_path / "smtp-sink.out"
    counters.write_bytes(
        b"sess=1 quit=0 mesg=1\rsess=2 quit=1 mesg=1999\rsess=2 quit=2 mesg=2000\r"
    )
    sink = PostfixSink(1, counters, None)  # type: ignore[arg-type]
    assert sink.accepted() == 2000


FERRETDB_STATUS = {
    "ok": 1.0,
    "metrics": {
        "commands": {
            "find": {"total": 100, "failed": 0},
            "insert": {"total": 40, "failed": 2},
            "update": {"total": 10, "failed": 0},
            "hello": {"total": 999, "failed": 0},
        }
    },
}


def test_ferretdbs_command_totals_become_reads_and_writes_per_event_without_handshakes() -> None:
    before = db_ops.counts(FERRETDB_STATUS)
    assert before[0] == "ferretdb serverStatus.metrics.commands"
    assert before[1]["insert"] == 38  # a failed command did no work
    after_status: dict[str, Any] = {
        "metrics": {
            "commands": {
                "find": {"total": 300, "failed": 0},
                "insert": {"total": 240, "failed": 2},
                "update": {"total": 10, "failed": 0},
                "hello": {"total": 5000, "failed": 0},
                "delete": {"total": 50, "failed": 0},
            }
        }
    }
    ops = db_ops.per_event(before, db_ops.counts(after_status), 100, "private")
    assert ops["per_event"] == {"delete": 0.5, "find": 2.0, "insert": 2.0}
    assert (ops["reads_per_event"], ops["writes_per_event"]) == (2.0, 2.5)
    assert ops["server_wide"] is False
    results = _results(notifier={"rate": 400.0, "db_ops": ops})
    assert (
        "DB ops per event, notifier: reads 2.0, writes 2.5 (delete 0.5, find 2.0, insert 2.0)"
        in report.table(results)
    )
    assert "ferretdb serverStatus.metrics.commands" in report.table(results)


def test_mongodbs_opcounters_are_read_under_the_commands_names_and_a_shared_stack_is_marked() -> (
    None
):
    status = {
        "opcounters": {
            "insert": 1,
            "query": 2,
            "update": 3,
            "delete": 0,
            "getmore": 0,
            "command": 9,
        }
    }
    before = db_ops.counts(status)
    assert before == (
        "mongodb serverStatus.opcounters",
        {"insert": 1, "find": 2, "update": 3, "delete": 0, "getMore": 0, "command": 9},
    )
    later = {
        "opcounters": {
            "insert": 11,
            "query": 12,
            "update": 3,
            "delete": 0,
            "getmore": 0,
            "command": 90,
        }
    }
    ops = db_ops.per_event(before, db_ops.counts(later), 10, "shared")
    assert ops["per_event"] == {"find": 1.0, "insert": 1.0}  # `command` is not a data operation
    assert ops["server_wide"] is True
    assert "[shared stack" in report.table(_results(relay={"db_ops": ops}))
    with pytest.raises(ValueError, match="neither"):
        db_ops.counts({"ok": 1.0})


def test_the_hostile_relay_diagnostic_reads_as_one_line_and_alone_with_only() -> None:
    times = {"sessions": 4, "greeting_max_ms": 2.4, "message_max_ms": 57.6, "replies": [250]}
    hostile = {
        "hostile_dsn": {"bytes": 1049000, "reply": 250, "ms": 50.2},
        "hostile_dkim": {"signatures": 3, "reply": 250, "ms": 64.0},
        "during": times,
        "idle": times | {"greeting_max_ms": 1.0, "message_max_ms": 11.0},
    }
    results = _results() | {"diagnostics": {"relay_hostile": hostile}, "resources": {}}
    alone = report.diagnostics(results)
    assert alone == (
        "  diagnostic relay_hostile: 1 MB hostile DSN 250 in 50 ms, 3 hostile DKIM signatures "
        "250 in 64 ms; meanwhile 4 other session(s): greeting max 2 ms, message max 58 ms "
        "(idle: greeting 1 ms, message 11 ms)"
    )
    assert alone in report.table(results)
    failed = _results() | {"diagnostics": {"relay_hostile": {"error": "BenchError: no relay"}}}
    assert "relay_hostile: {'error': 'BenchError: no relay'}" in report.diagnostics(failed)
