"""The targets met or missed, results.json, and the one printed table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.scaling import cpu_per_event

Results = dict[str, Any]
# Absolute rates per process against Postfix's smtp-sink, on this machine (issue 14).
RATE_TARGETS = {"notifier": 500.0, "relay": 600.0}
PROJECTOR_OF_RAW_WRITES = 0.7
RSS_GROWTH_MAX_PCT = 10.0
# (stage, the ceiling it is compared with): rows shown beside the targets, without one.
COMPARISONS = (
    ("notifier_capture", "smtp_send capture"),
    ("notifier_unrecorded_pool", "smtp_send smtp-sink"),
    ("relay_without_auth", "smtp-source into smtp-sink"),
    ("relay_aiosmtplib", "smtp_send smtp-sink"),
    ("relay_capture", "smtp_send capture"),
)


def _rate(section: Any) -> float | None:
    if isinstance(section, dict) and isinstance(section.get("rate"), int | float):
        return float(section["rate"])
    return None


def _row(
    stage: str, rate: float | None, ceiling: str | None, ceiling_rate: float | None, target: Any
) -> dict[str, Any]:
    ratio = round(rate / ceiling_rate, 3) if rate is not None and ceiling_rate else None
    if isinstance(target, float) and target >= 1:
        met: bool | None = rate is not None and rate >= target
    elif isinstance(target, float):
        met = ratio is not None and ratio >= target
    else:
        met = None
    return {
        "stage": stage,
        "rate": rate,
        "ceiling": ceiling,
        "ceiling_rate": ceiling_rate,
        "ratio": ratio,
        "target": target,
        "met": met,
    }


def verdicts(results: Results) -> list[dict[str, Any]]:
    """One row per target (and per comparison, target "-"): rate, ceiling, ratio, met."""
    ceilings, stages = results.get("ceilings", {}), results.get("stages", {})
    raw_writes = results.get("diagnostics", {}).get("projector_writes")
    rows = [
        _row(
            "notifier",
            _rate(stages.get("notifier")),
            "smtp_send smtp-sink",
            _rate(ceilings.get("smtp_send smtp-sink")),
            RATE_TARGETS["notifier"],
        ),
        _row(
            "relay",
            _rate(stages.get("relay")),
            "smtp-source into smtp-sink",
            _rate((stages.get("relay") or {}).get("ceiling")),
            RATE_TARGETS["relay"],
        ),
        _row(
            "projector",
            _rate(stages.get("projector")),
            "own raw writes",
            _rate(raw_writes),
            PROJECTOR_OF_RAW_WRITES,
        ),
    ]
    for stage, ceiling in COMPARISONS:
        section = stages.get(stage) or {}
        if stage.startswith("relay"):
            ceiling_rate = _rate(section.get("ceiling"))
        else:
            ceiling_rate = _rate(ceilings.get(ceiling))
        rows.append(_row(stage, _rate(section), ceiling, ceiling_rate, "-"))
    memory = results.get("memory", {})
    growth = memory.get("growth_pct")
    rows.append(
        {
            "stage": "notifier RSS growth %",
            "rate": growth,
            "ceiling": None,
            "ceiling_rate": None,
            "ratio": None,
            "target": f"< {RSS_GROWTH_MAX_PCT}",
            "met": growth is not None
            and growth < RSS_GROWTH_MAX_PCT
            and not memory.get("timed_out"),
        }
    )
    return rows


def write(results: Results, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}{suffix}" if value < 10 else f"{value:,.0f}{suffix}"
    return f"{value:,}{suffix}" if isinstance(value, int) else f"{value}{suffix}"


def table(results: Results) -> str:
    """The whole run on one screen: ceilings, targets, CPU per event, scale-out, backends."""
    meta = results["meta"]
    lines = [
        f"Conversation Tracker bench {meta['run_id']} at {meta['git']}  "
        f"({meta['stack']} stack, {meta.get('brokers', 1)} Kafka broker(s), "
        f"{meta['cpus']} CPUs, events {meta['events']:,})",
        "",
        "Ceilings (alone, same clients and settings as the workers)",
    ]
    for name, section in results.get("ceilings", {}).items():
        lines.append(f"  {name:<24} {_fmt(_rate(section), '/s'):>10}   {_detail(section)}")
    for stage in ("relay", "relay_without_auth", "relay_aiosmtplib", "relay_capture"):
        ceiling = results.get("stages", {}).get(stage, {}).get("ceiling")
        if ceiling:
            lines.append(f"  {stage + ' ceiling':<24} {_fmt(_rate(ceiling), '/s'):>10}")
    pipelines = results.get("pipelines", {})
    if pipelines:
        lines.append(
            "  CPU-only pipeline, one core: "
            + ", ".join(f"{k.removesuffix('_per_s')} {v:,}/s" for k, v in pipelines.items())
        )
    lines += ["", f"  {'stage':<26} {'rate':>9} {'against':>30} {'ratio':>6} {'target':>7}  met"]
    for row in results.get("verdicts", []):
        against = f"{row['ceiling']} {_fmt(row['ceiling_rate'])}" if row["ceiling"] else ""
        unit = "" if row["ceiling"] is None else "/s"
        lines.append(
            f"  {row['stage']:<26} {_fmt(row['rate'], unit):>9} {against:>30} "
            f"{_fmt(row['ratio']):>6} {row['target']!s:>7}  {_verdict(row['met'])}"
        )
    lines += _latency_and_memory(results)
    lines += _cpu_per_event(results)
    lines += _db_ops(results)
    lines += _scale_out(results)
    lines += _backends(results)
    lines += _diagnostics(results)
    return "\n".join(lines)


def _latency_and_memory(results: Results) -> list[str]:
    lines = []
    lat = results.get("stages", {}).get("latency")
    if lat and "p50_ms" in lat:
        lines.append(
            f"  latency @ {lat['offered_rate']}/s offered: p50 {lat['p50_ms']} ms, "
            f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms ({lat['measured']}/{lat['events']})"
        )
    mem = results.get("memory", {})
    if mem.get("at_small"):
        a, b = mem["at_small"], mem["at_large"]
        lines.append(
            f"  notifier RSS: {a['rss_kb'] / 1024:.1f} MiB after {a['events']:,} events -> "
            f"{b['rss_kb'] / 1024:.1f} MiB after {b['events']:,} (growth {mem['growth_pct']}%)"
            + ("  [timed out before the large mark]" if mem.get("timed_out") else "")
        )
    return lines


def _cpu_per_event(results: Results) -> list[str]:
    """CPU ms per event by component, for the stages that ran on a private stack."""
    lines = []
    for name in ("notifier", "notifier_capture", "projector", "relay", "relay_aiosmtplib"):
        used = cpu_per_event(results, name)
        if used:
            parts = ", ".join(f"{k} {v}" for k, v in sorted(used.items(), key=lambda kv: -kv[1]))
            lines.append(f"  CPU ms per event, {name}: {parts}")
    return ["", *lines] if lines else []


def _db_ops(results: Results) -> list[str]:
    """Database commands per event by stage, as the server counted them (bench/db_ops.py)."""
    lines = []
    for name, section in results.get("stages", {}).items():
        ops = section.get("db_ops") if isinstance(section, dict) else None
        if not ops:
            continue
        parts = ", ".join(f"{k} {v}" for k, v in sorted(ops["per_event"].items()))
        shared = "  [shared stack: other clients counted too]" if ops.get("server_wide") else ""
        lines.append(
            f"  DB ops per event, {name}: reads {ops['reads_per_event']}, writes "
            f"{ops['writes_per_event']} ({parts or 'none'}){shared}"
        )
    if not lines:
        return []
    sources = {
        s["db_ops"]["source"]
        for s in results.get("stages", {}).values()
        if isinstance(s, dict) and s.get("db_ops")
    }
    return [
        "",
        f"Database operations per event (server's own counters: {', '.join(sorted(sources))})",
        *lines,
    ]


def _scale_out(results: Results) -> list[str]:
    summary = results.get("scale_out_summary")
    if not summary:
        return []
    lines = [
        "",
        f"Scale-out ({summary.get('brokers')} brokers, {summary.get('partitions')} partitions, "
        f"replication {summary.get('replication')}, into smtp-sink)",
    ]
    lines.append(f"  {'worker':<10} {'replicas':>8} {'rate':>9} {'eff.':>5} {'gain':>5}  CPU ms/ev")
    for kind in ("notifier", "projector"):
        for row in summary.get(kind, []):
            cpu = row.get("cpu_ms_per_event") or {}
            parts = ", ".join(f"{k} {v}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
            lines.append(
                f"  {kind:<10} {row['replicas']:>8} {_fmt(row['rate'], '/s'):>9} "
                f"{_fmt(row['efficiency']):>5} {_fmt(row['added_replica_gain']):>5}  {parts}"
            )
    return lines


def _backends(results: Results) -> list[str]:
    section = results.get("backends", {})
    if not section or "skipped" in section:
        return [f"  backends: {section.get('skipped')}"] if section else []
    lines = ["", "FerretDB backends (same run)"]
    for backend in ("sqlite", "postgresql"):
        ledger = section.get(f"ledger_{backend}", {})
        lines.append(
            f"  {backend:<10} ledger insert p50 {ledger.get('ms_p50')} ms "
            f"({_fmt(_rate(ledger), '/s')} one at a time), notifier "
            f"{_fmt(_rate(section.get(f'notifier_{backend}')), '/s')}, projector "
            f"{_fmt(_rate(section.get(f'projector_{backend}')), '/s')}, raw writes "
            f"{_fmt(_rate(section.get(f'projector_writes_{backend}')), '/s')}"
        )
    return lines


def diagnostics(results: Results) -> str:
    """The diagnostics alone (a step run with `--only`): the machine's load and each result."""
    return "\n".join(_diagnostics(results)).strip("\n")


def _diagnostics(results: Results) -> list[str]:
    lines = [""]
    res = results.get("resources", {})
    if res:
        loads = ", ".join(f"{k} {v['load1_start']}->{v['load1_end']}" for k, v in res.items())
        lines.append(f"  machine load (1-min avg, {results['meta']['cpus']} CPUs): {loads}")
    for name, diag in results.get("diagnostics", {}).items():
        shown = _hostile(diag) if name == "relay_hostile" and "during" in diag else diag
        lines.append(f"  diagnostic {name}: {shown}")
    for section in ("stages", "scale_out", "backends", "ceilings"):
        for stage, value in results.get(section, {}).items():
            if isinstance(value, dict) and value.get("error"):
                lines.append(f"  {stage}: ERROR {value['error']}")
    return lines


def _hostile(result: dict[str, Any]) -> str:
    """The relay_hostile line (bench/hostile.py): the hostile messages' answers, the others'."""
    dsn, dkim, during, idle = (result[k] for k in ("hostile_dsn", "hostile_dkim", "during", "idle"))
    return (
        f"1 MB hostile DSN {dsn['reply']} in {dsn['ms']:.0f} ms, {dkim['signatures']} hostile "
        f"DKIM signatures {dkim['reply']} in {dkim['ms']:.0f} ms; meanwhile "
        f"{during['sessions']} other session(s): greeting max {during['greeting_max_ms']:.0f} ms, "
        f"message max {during['message_max_ms']:.0f} ms (idle: greeting "
        f"{idle['greeting_max_ms']:.0f} ms, message {idle['message_max_ms']:.0f} ms)"
    )


def _verdict(met: bool | None) -> str:
    return "-" if met is None else "yes" if met else "NO"


def _detail(section: Any) -> str:
    if not isinstance(section, dict):
        return ""
    keep = ("records", "messages", "documents", "pool", "avg_bytes", "batch")
    parts = [f"{k} {section[k]}" for k in keep if k in section]
    if "update_by_id_and_entrycount_rate" in section:
        parts.append(
            f"updates by _id {section['update_by_id_rate']}/s, by _id+entryCount "
            f"{section['update_by_id_and_entrycount_rate']}/s on {section['collection_size']} docs"
        )
    return ", ".join(parts)
