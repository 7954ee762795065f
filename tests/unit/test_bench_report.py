"""The bench's verdicts and scale-out summary, on made-up results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import report
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
