"""Stage / ceiling ratios against their targets, results.json, and the printed table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Results = dict[str, Any]
TARGETS = {"notifier": 0.7, "projector": 0.7, "relay": 0.5}
RSS_GROWTH_MAX_PCT = 10.0


def _rate(section: Any) -> float | None:
    if isinstance(section, dict) and isinstance(section.get("rate"), int | float):
        return float(section["rate"])
    return None


def verdicts(results: Results) -> list[dict[str, Any]]:
    """One row per target: the stage's rate, its ceiling's, the ratio and whether it is met."""
    ceilings, stages = results.get("ceilings", {}), results.get("stages", {})
    relay = stages.get("relay", {})
    pairs = {
        "notifier": ("smtp_send", _rate(ceilings.get("smtp_send"))),
        "projector": ("bulk_write", _rate(ceilings.get("bulk_write"))),
        "relay": ("capture_accept", _rate(relay.get("ceiling"))),
    }
    rows = []
    for stage, (ceiling_name, ceiling) in pairs.items():
        rate = _rate(stages.get(stage))
        ratio = round(rate / ceiling, 3) if rate is not None and ceiling else None
        rows.append(
            {
                "stage": stage,
                "rate": rate,
                "ceiling": ceiling_name,
                "ceiling_rate": ceiling,
                "ratio": ratio,
                "target": TARGETS[stage],
                "met": ratio is not None and ratio >= TARGETS[stage],
            }
        )
    # Not a target: the relay with sender authentication off, beside the authenticated row.
    unauthenticated = stages.get("relay_without_auth", {})
    plain, plain_ceiling = _rate(unauthenticated), _rate(unauthenticated.get("ceiling"))
    if plain is not None:
        rows.append(
            {
                "stage": "relay, auth off",
                "rate": plain,
                "ceiling": "capture_accept",
                "ceiling_rate": plain_ceiling,
                "ratio": round(plain / plain_ceiling, 3) if plain_ceiling else None,
                "target": "-",
                "met": None,
            }
        )
    # Not a target: the notifier without its one-duplicate-per-kill bound, for comparison.
    unbounded = _rate(stages.get("notifier_unrecorded_pool"))
    smtp = _rate(ceilings.get("smtp_send"))
    if unbounded is not None:
        rows.append(
            {
                "stage": f"notifier, {results['meta']['smtp_pool_size']} unrecorded",
                "rate": unbounded,
                "ceiling": "smtp_send",
                "ceiling_rate": smtp,
                "ratio": round(unbounded / smtp, 3) if smtp else None,
                "target": "-",
                "met": None,
            }
        )
    growth = results.get("memory", {}).get("growth_pct")
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
            and not results["memory"].get("timed_out"),
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
        return f"{value:,.1f}{suffix}" if value < 100 else f"{value:,.0f}{suffix}"
    return f"{value:,}{suffix}" if isinstance(value, int) else f"{value}{suffix}"


def table(results: Results) -> str:
    lines = [f"Conversation Tracker bench {results['meta']['run_id']}  ({_meta(results)})", ""]
    lines.append("Ceilings (alone, same clients and settings as the workers)")
    for name, section in results.get("ceilings", {}).items():
        lines.append(f"  {name:<22} {_fmt(_rate(section), '/s'):>12}   {_detail(section)}")
    relay_ceiling = results.get("stages", {}).get("relay", {}).get("ceiling")
    if relay_ceiling:
        lines.append(f"  {'capture_accept':<22} {_fmt(_rate(relay_ceiling), '/s'):>12}")
    cpu = results.get("cpu", {})
    if cpu:
        lines.append("  cpu, one core, no I/O:  " + ", ".join(f"{k} {v:,}" for k, v in cpu.items()))
    lines += ["", f"  {'stage':<22} {'rate':>12} {'ceiling':>22} {'ratio':>7} {'target':>7}  met"]
    for row in results.get("verdicts", []):
        ceiling = f"{row['ceiling']} {_fmt(row['ceiling_rate'])}" if row["ceiling"] else ""
        unit = "" if row["ceiling"] is None else "/s"
        lines.append(
            f"  {row['stage']:<22} {_fmt(row['rate'], unit):>12} {ceiling:>22} "
            f"{_fmt(row['ratio']):>7} {row['target']!s:>7}  {_verdict(row['met'])}"
        )
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
    res = results.get("resources", {})
    if res:
        loads = ", ".join(f"{k} {v['load1_start']}->{v['load1_end']}" for k, v in res.items())
        lines.append(
            f"  machine load (1-min avg, {results['meta']['cpus']} CPUs) per step: {loads}"
        )
    for stage in ("notifier", "projector", "relay"):
        section = results.get("stages", {}).get(stage, {})
        ferret = res.get(stage, {}).get("ferretdb_cpu_s")
        done = section.get("completed") or section.get("forwarded_at_sink")
        if ferret is not None and done:
            lines.append(f"  FerretDB CPU per {stage} event: {ferret / done * 1000:.0f} ms")
    lines += _diagnostics(results)
    for stage, section in results.get("stages", {}).items():
        if isinstance(section, dict) and section.get("error"):
            lines.append(f"  {stage}: ERROR {section['error']}")
    return "\n".join(lines)


def _diagnostics(results: Results) -> list[str]:
    lines = []
    replay = _rate(results.get("diagnostics", {}).get("projector_writes"))
    projector = _rate(results.get("stages", {}).get("projector"))
    if replay and projector:
        lines.append(
            f"  projector against its own document writes replayed raw: {_fmt(projector)} / "
            f"{_fmt(replay)} events/s = {projector / replay:.2f}"
        )
    for name, diag in results.get("diagnostics", {}).items():
        lines.append(f"  diagnostic {name}: {diag}")
    return lines


def _verdict(met: bool | None) -> str:
    return "-" if met is None else "yes" if met else "NO"


def _meta(results: Results) -> str:
    meta = results["meta"]
    return f"{meta['stack']} stack, {meta['cpus']} CPUs, events {meta['events']:,}"


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
